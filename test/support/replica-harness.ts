/**
 * What the Replica tests' harnesses share (test/actors/replica.test.ts, replica-rules.test.ts):
 * the shard's geometry, page data, and stuck disks.
 */
import type { ShardGeometry } from '../../actors/shard';

export const geometry: ShardGeometry = { volumeId: 'v1', shard: 0, shards: 1, pageCount: 256, pageSize: 4096, stripePages: 256 };

export function page(fill: number): Uint8Array {
  return new Uint8Array(4096).fill(fill & 0xff);
}

/** Members whose device queue starts no batch until the test releases it (a stuck disk). */
export class DiskGates {
  private readonly gates = new Map<string, Promise<void>>();
  private readonly releases = new Set<() => void>();

  /**
   * Runs `run` (a device batch of `id`) once `id`'s disk is not stuck. The gate is looked at when
   * the batch would start, not when it was scheduled: a batch scheduled before `stall` but started
   * after it (it takes whatever is queued by then) waits too.
   */
  start(id: string, run: () => void): void {
    const gate = this.gates.get(id);
    if (gate) void gate.then(() => setImmediate(() => this.start(id, run)));
    else run();
  }

  /** Holds every batch of `id`'s device queue until the returned release is called: no timing can let one through. */
  stall(id: string): () => void {
    let release!: () => void;
    this.gates.set(id, new Promise<void>((r) => (release = r)));
    const open = (): void => {
      this.gates.delete(id);
      this.releases.delete(open);
      release();
    };
    this.releases.add(open);
    return open;
  }

  /** Releases every stuck disk (a harness stopping). */
  releaseAll(): void {
    for (const open of [...this.releases]) open();
  }
}
