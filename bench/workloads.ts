/**
 * Workload generators for the Strata cluster benchmark: which pages each request touches and
 * whether it reads or writes them.
 *
 * A request covers `pagesPerRequest` adjacent pages (a vectored request) starting at a multiple
 * of `pagesPerRequest`, so every request stays inside the volume and consecutive sequential
 * requests do not overlap. Random choices come from a seeded generator: the same options and
 * seed give the same sequence of requests on every run and every machine.
 */

/** The access patterns of the benchmark. */
export type Workload = "randwrite" | "randread" | "seqwrite" | "seqread" | "mixed";

/** Every {@link Workload}, in the order the help text lists them. */
export const WORKLOADS: readonly Workload[] = ["randwrite", "randread", "seqwrite", "seqread", "mixed"];

/** Most pages one benchmark request may cover. */
export const PAGES_PER_REQUEST_BENCH_MAX = 64;

/** One request of a workload: the kind of access and the pages, ascending and adjacent. */
export interface WorkloadRequest {
  kind: "read" | "write";
  /** First page of the request. */
  firstPage: number;
  /** Page numbers firstPage .. firstPage + pagesPerRequest − 1. */
  pages: number[];
}

/** Options of {@link WorkloadGenerator}. */
export interface WorkloadOptions {
  workload: Workload;
  /** Pages of the volume (the region the workload stays in), ≥ pagesPerRequest. */
  pageCount: number;
  /** Adjacent pages per request, 1..{@link PAGES_PER_REQUEST_BENCH_MAX}. */
  pagesPerRequest: number;
  /** Fraction of reads for `mixed`, 0..1. Ignored by the other workloads. Default 0.5. */
  readRatio?: number;
  /** Seed of the random choices (any 32-bit integer). Default 1. */
  seed?: number;
}

/**
 * A small, fast, seeded pseudo-random generator (mulberry32): 32-bit state, uniform floats in
 * [0, 1). Not for cryptography; for reproducible benchmark choices.
 */
export class SeededRandom {
  private state: number;

  constructor(seed: number) {
    if (!Number.isInteger(seed)) throw new RangeError(`SeededRandom: seed must be an integer, got ${seed}`);
    this.state = seed >>> 0;
  }

  /** The next float in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer uniformly in [0, bound) for 1 ≤ bound ≤ 2^32. */
  nextInt(bound: number): number {
    if (!Number.isInteger(bound) || bound < 1 || bound > 2 ** 32) {
      throw new RangeError(`SeededRandom.nextInt: bound must be an integer in 1..2^32, got ${bound}`);
    }
    return Math.floor(this.next() * bound);
  }
}

/**
 * Produces the requests of a workload, one per {@link next} call, forever (the caller bounds the
 * run). Random workloads pick a uniformly random aligned slot; sequential ones walk the volume
 * from page 0 and wrap around; `mixed` picks a random slot and reads with probability readRatio.
 */
export class WorkloadGenerator {
  readonly workload: Workload;
  readonly pageCount: number;
  readonly pagesPerRequest: number;
  readonly readRatio: number;
  /** Number of aligned request slots in the volume. */
  readonly slots: number;
  private readonly random: SeededRandom;
  private cursor = 0;

  constructor(options: WorkloadOptions) {
    const { workload, pageCount, pagesPerRequest } = options;
    if (!WORKLOADS.includes(workload)) throw new RangeError(`workload must be one of ${WORKLOADS.join(", ")}, got ${String(workload)}`);
    if (!Number.isInteger(pagesPerRequest) || pagesPerRequest < 1 || pagesPerRequest > PAGES_PER_REQUEST_BENCH_MAX) {
      throw new RangeError(`pagesPerRequest must be an integer in 1..${PAGES_PER_REQUEST_BENCH_MAX}, got ${pagesPerRequest}`);
    }
    if (!Number.isSafeInteger(pageCount) || pageCount < pagesPerRequest) {
      throw new RangeError(`pageCount must be an integer >= pagesPerRequest (${pagesPerRequest}), got ${pageCount}`);
    }
    const readRatio = options.readRatio ?? 0.5;
    if (!(readRatio >= 0 && readRatio <= 1)) throw new RangeError(`readRatio must be in 0..1, got ${readRatio}`);
    this.workload = workload;
    this.pageCount = pageCount;
    this.pagesPerRequest = pagesPerRequest;
    this.readRatio = readRatio;
    this.slots = Math.floor(pageCount / pagesPerRequest);
    this.random = new SeededRandom(options.seed ?? 1);
  }

  /** The next request. */
  next(): WorkloadRequest {
    let slot: number;
    let kind: "read" | "write";
    switch (this.workload) {
      case "randwrite":
      case "randread":
        slot = this.randomSlot();
        kind = this.workload === "randread" ? "read" : "write";
        break;
      case "seqwrite":
      case "seqread":
        slot = this.cursor;
        this.cursor = (this.cursor + 1) % this.slots;
        kind = this.workload === "seqread" ? "read" : "write";
        break;
      case "mixed":
        // The kind is drawn before the slot so that the page sequence does not depend on readRatio's effect.
        kind = this.random.next() < this.readRatio ? "read" : "write";
        slot = this.randomSlot();
        break;
    }
    const firstPage = slot * this.pagesPerRequest;
    const pages = new Array<number>(this.pagesPerRequest);
    for (let i = 0; i < this.pagesPerRequest; i++) pages[i] = firstPage + i;
    return { kind, firstPage, pages };
  }

  private randomSlot(): number {
    // Volumes above 2^32 slots are sampled in two draws so that every slot is reachable.
    if (this.slots <= 2 ** 32) return this.random.nextInt(this.slots);
    const high = this.random.nextInt(Math.ceil(this.slots / 2 ** 32));
    return Math.min(this.slots - 1, high * 2 ** 32 + this.random.nextInt(2 ** 32));
  }
}

/** True if the workload issues writes. */
export function writesPages(workload: Workload, readRatio = 0.5): boolean {
  return workload === "randwrite" || workload === "seqwrite" || (workload === "mixed" && readRatio < 1);
}

/** True if the workload issues reads (and so wants the volume filled first). */
export function readsPages(workload: Workload, readRatio = 0.5): boolean {
  return workload === "randread" || workload === "seqread" || (workload === "mixed" && readRatio > 0);
}

/**
 * `count` page buffers of `pageSize` bytes filled with seeded pseudo-random bytes (so a page
 * store that compressed or deduplicated would not be flattered), reused round-robin as payload.
 */
export function payloadPages(pageSize: number, count: number, seed = 1): Uint8Array[] {
  if (!Number.isInteger(pageSize) || pageSize < 4 || pageSize % 4 !== 0) {
    throw new RangeError(`pageSize must be a positive multiple of 4, got ${pageSize}`);
  }
  if (!Number.isInteger(count) || count < 1 || count > 4096) throw new RangeError(`count must be an integer in 1..4096, got ${count}`);
  const random = new SeededRandom(seed);
  const out: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    const page = new Uint8Array(pageSize);
    const words = new Uint32Array(page.buffer);
    for (let w = 0; w < words.length; w++) words[w] = random.nextInt(2 ** 32);
    out.push(page);
  }
  return out;
}
