/** Test support: reaching into a slab's memory as a fault of it would. */
import type { Slab } from '../../storage-engine/slab';

/** The view of `slot` when it is allocated; undefined when it is free (`Slab.view` refuses those). */
function viewIfAllocated(slab: Slab, slot: number): Uint8Array | undefined {
  try {
    return slab.view(slot);
  } catch {
    return undefined;
  }
}

/**
 * Flips the bits `mask` of byte `at` in every allocated slot of `slab` whose first
 * `page.length` bytes are `page` (a page held there, changed under its holder); returns how
 * many slots it changed.
 */
export function flipInSlab(slab: Slab, page: Uint8Array, at: number, mask: number): number {
  let changed = 0;
  for (let slot = 0; slot < slab.slotCount; slot++) {
    const v = viewIfAllocated(slab, slot)?.subarray(0, page.length);
    if (v === undefined || Buffer.compare(Buffer.from(v.buffer, v.byteOffset, v.length), Buffer.from(page.buffer, page.byteOffset, page.length)) !== 0) continue;
    v[at]! ^= mask;
    changed++;
  }
  return changed;
}
