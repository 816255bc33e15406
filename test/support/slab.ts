/** Test support: reaching into a slab's memory as a fault of it would. */
import type { Slab } from '../../storage-engine/slab';

/** The view of `slot` when it is allocated; undefined when it is free (`Slab.view` refuses those). */
export function viewIfAllocated(slab: Slab, slot: number): Uint8Array | undefined {
  try {
    return slab.view(slot);
  } catch {
    return undefined;
  }
}
