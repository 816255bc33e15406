/**
 * Shard geometry and the types shared by the actors that serve a shard.
 *
 * A volume's pages are striped over its shards in runs of `stripePages`; each shard is a
 * replicated log (actors/replica.ts) whose elected replica serves the shard's requests.
 */
import type { Slab } from '../storage-engine/slab';

export interface ShardGeometry {
  volumeId: string;
  shard: number;
  shards: number;
  pageCount: number;
  pageSize: 4096 | 8192;
  stripePages: number;
}

/** The shard a page of a volume belongs to (the one rule, in messages/api.ts). */
export { shardOfPage } from '../messages/api';

export interface PageData {
  page: number;
  data: Uint8Array;
}

/**
 * Checksumming of large write batches on another thread. The batch's PageWrite payload is
 * encoded into a slab slot and its CRC-32C computed from the slot's handle (no copy); the log
 * combines it with the record header's checksum.
 */
export interface PayloadOffload {
  /** Payloads at least this many bytes are checksummed off-thread. */
  bytesMin: number;
  /** Slots big enough for a whole payload. */
  slab: Slab;
  crc32c(sab: SharedArrayBuffer, offset: number, length: number): Promise<number>;
}
