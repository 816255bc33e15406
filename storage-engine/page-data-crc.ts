/**
 * The checksum of the page data a message carries (`PAGE_DATA_CRC`, messages/api.ts): the
 * CRC-32C of the pages' data, one after the other in their order. A client computes it for the
 * pages it writes, from its own copy, and the shard's leader checks the bytes it received
 * against it before anything is written; the leader gives it for the pages it reads out (made
 * from the checksums each page was checked against where it was read), and the client checks
 * what it received. So page data damaged between the two ends (a network's
 * error that TCP's checksum let through, a faulty copy on the way) is refused instead of being
 * written with a record checksum of its own, or handed to the application.
 */
import { ProtocolError } from '../messages/errors';
import { crc32c, crc32cCombine } from './crc32c';

/** CRC-32C of `pages`, one after the other. */
export function pageDataCrc(pages: readonly Uint8Array[]): number {
  let crc = 0;
  for (let i = 0; i < pages.length; i++) crc = crc32c(pages[i]!, crc);
  return crc;
}

/**
 * Each page's CRC-32C, and `pageDataCrc` of them combined from those: one pass. For a reader that
 * passes each page's checksum on with it, as checked.
 */
export function eachPageCrc(pages: readonly Uint8Array[]): { crcs: number[]; crc: number } {
  const crcs = new Array<number>(pages.length);
  let crc = 0;
  for (let i = 0; i < pages.length; i++) {
    crcs[i] = crc32c(pages[i]!);
    crc = crc32cCombine(crc, crcs[i]!, pages[i]!.length);
  }
  return { crcs, crc };
}

/** `pageDataCrc` of pages of `pageBytes` each, from each one's CRC-32C (`crcs`), without their data. */
export function combinePageCrcs(crcs: readonly number[], pageBytes: number): number {
  let crc = 0;
  for (let i = 0; i < crcs.length; i++) crc = crc32cCombine(crc, crcs[i]!, pageBytes);
  return crc;
}

/** CRC-32C of the data of `pages`, one after the other. */
export function pageWritesCrc(pages: readonly { readonly data: Uint8Array }[]): number {
  let crc = 0;
  for (let i = 0; i < pages.length; i++) crc = crc32c(pages[i]!.data, crc);
  return crc;
}

/**
 * Throws `corruption` with `details.inTransit` when `computed` (from the bytes received) is not
 * `expected` (the sender's): `what` names the message.
 */
export function checkPageDataCrc(expected: number, computed: number, what: string): void {
  if (expected === computed) return;
  throw new ProtocolError(
    'corruption',
    `${what}: its data does not match the checksum it was sent with (CRC-32C ${expected}, computed ${computed} from the bytes received): damaged on the way; nothing of it was taken, send it again`,
    { inTransit: true, crc: expected, computed },
  );
}

/** True for the error `checkPageDataCrc` throws: data damaged on the way, worth sending again. */
export function damagedInTransit(e: unknown): boolean {
  return e instanceof ProtocolError && e.code === 'corruption' && e.details?.['inTransit'] === true;
}
