/**
 * The soak's block workload: a volume of its own exported over NBD (cluster/nbd.ts) and written
 * through one NBD connection while the faults run, as a VM's disk would be. Each of
 * BLOCK_WRITERS writers owns the blocks `b` with `b mod BLOCK_WRITERS` its number, and has one
 * write in flight: no two writes of a block are ever in flight together, as a block client
 * keeps them. Every write is a whole 4 KiB block holding a value of its own (`page`).
 *
 * The check, once the faults are over: every block reads as its last write answered without an
 * error, or as one of the writes of it answered with an error since (EIO: its outcome unknown),
 * or as zeros if no write of it was answered. A block reading anything else lost an
 * acknowledged write (or holds bytes no write wrote).
 */
import { NBD_CMD, startNbdServer, type NbdServer } from '../../cluster/nbd';
import type { StrataClient } from '../../cluster/client';
import type { Logger } from '../../observability/log';
import { withTimeout } from '../../runtime/timeout';
import { Session } from '../support/nbd-client';
import { prng } from '../support/prng';

/** The workload's volume: BLOCKS pages of 4 KiB in 2 shards of 3 replicas. */
export const BLOCK_VOLUME = 'soak-blocks';
export const BLOCKS = 64;
const BLOCK_BYTES = 4096;
const BLOCK_WRITERS = 4;
/** Longest wait for one NBD request: past the export's own bound (its tries within the client's 10 s timeout, and `overloaded` retries). */
const REQUEST_MS_MAX = 60_000;
/** How long the final read of a block may be tried again while it fails. */
const FINAL_READ_MS = 60_000;

/** What the block workload did. */
export interface BlockResult {
  /** Writes answered without an error. */
  writesOk: number;
  /** Writes answered with an error (their outcome unknown), by NBD errno. */
  writesFailed: number;
  failedErrnos: Record<string, number>;
  /** Tries of a write the export made again (no answer, or no leader, within a try). */
  triesMadeAgain: number;
  /** Blocks read back at the end, each checked. */
  blocksChecked: number;
}

export interface BlockWorkload {
  /** Stops the writers: resolves once none has a write in flight. */
  stop(): Promise<void>;
  /** Reads every block back and checks it; a block that is wrong is a `problem`. */
  verify(): Promise<void>;
  /** Ends the connection and the export. */
  close(): Promise<void>;
  result(): BlockResult;
}

/** The last write of a block answered without an error, and the values of those answered with one since. */
interface BlockState {
  acked: string;
  unknown: string[];
}

/**
 * Starts the export of BLOCK_VOLUME (created by the caller) on a loopback port, connects, and
 * starts the writers. `client` serves the export (its timeout bounds each Strata call); `page`
 * and `valueOf` make a block of a value and read a value back ('' for zeros).
 */
export async function startBlockWorkload(opts: {
  client: StrataClient;
  seed: number;
  page: (value: string) => Uint8Array;
  valueOf: (block: Uint8Array) => string;
  problem: (text: string) => void;
}): Promise<BlockWorkload> {
  const counts: BlockResult = { writesOk: 0, writesFailed: 0, failedErrnos: {}, triesMadeAgain: 0, blocksChecked: 0 };
  const server: NbdServer = await startNbdServer({ client: opts.client, volume: BLOCK_VOLUME, host: '127.0.0.1', port: 0, logger: countingLogger(counts) });
  const session = await Session.open(server.address.port, BLOCK_VOLUME);
  session.failRequestsOnError = true;
  const blocks: BlockState[] = Array.from({ length: BLOCKS }, () => ({ acked: '', unknown: [] }));
  let running = true;
  const request = async (type: number, block: number, data?: Buffer): Promise<{ error: number; data: Buffer }> => {
    const reply = await withTimeout(session.request(type, block * BLOCK_BYTES, BLOCK_BYTES, data === undefined ? {} : { data }), REQUEST_MS_MAX, () => new Error(`NBD request not answered within ${REQUEST_MS_MAX / 1000} s`));
    if (reply.error === -1) throw new Error(`the NBD connection failed: ${reply.message ?? ''}`);
    return reply;
  };

  const writer = async (w: number): Promise<void> => {
    const r = prng(opts.seed * 104_729 + w + 1);
    const own = Array.from({ length: BLOCKS / BLOCK_WRITERS }, (_, k) => k * BLOCK_WRITERS + w);
    let n = 0;
    while (running) {
      const block = own[Math.floor(r() * own.length)]!;
      const value = `b${block}.${w}.${n++}`;
      let error: number;
      try {
        error = (await request(NBD_CMD.WRITE, block, Buffer.from(opts.page(value)))).error;
      } catch (e) {
        opts.problem(`block ${block}: ${(e as Error).message}`);
        return;
      }
      const state = blocks[block]!;
      if (error === 0) {
        counts.writesOk++;
        state.acked = value;
        state.unknown = [];
      } else {
        counts.writesFailed++;
        counts.failedErrnos[String(error)] = (counts.failedErrnos[String(error)] ?? 0) + 1;
        state.unknown.push(value);
      }
      await new Promise((res) => setTimeout(res, r() * 20));
    }
  };
  const writers = Array.from({ length: BLOCK_WRITERS }, (_, w) => writer(w));

  return {
    async stop() {
      running = false;
      await Promise.all(writers);
    },
    async verify() {
      for (let block = 0; block < BLOCKS; block++) {
        const deadline = performance.now() + FINAL_READ_MS;
        for (;;) {
          let got: { error: number; data: Buffer };
          try {
            got = await request(NBD_CMD.READ, block);
          } catch (e) {
            // The connection is gone: no block can be read back.
            opts.problem(`the final read of block ${block} of the NBD export: ${(e as Error).message}`);
            return;
          }
          if (got.error === 0) {
            const value = opts.valueOf(got.data);
            const { acked, unknown } = blocks[block]!;
            if (value !== acked && !unknown.includes(value)) {
              opts.problem(`block ${block} of the NBD export reads ${JSON.stringify(value)}: its last write answered without an error was ${JSON.stringify(acked)}${unknown.length > 0 ? `, and ${unknown.length} answered with an error since (${unknown.slice(-3).map((v) => JSON.stringify(v)).join(', ')}, …)` : ''}`);
            }
            counts.blocksChecked++;
            break;
          }
          if (performance.now() > deadline) {
            opts.problem(`the final read of block ${block} of the NBD export failed for ${FINAL_READ_MS / 1000} s (errno ${got.error})`);
            break;
          }
          await new Promise((res) => setTimeout(res, 200));
        }
      }
    },
    async close() {
      running = false;
      session.peer.close();
      await server.stop();
    },
    result: () => ({ ...counts, failedErrnos: { ...counts.failedErrnos } }),
  };
}

/** The export's logger: counts the tries it made again, prints nothing (its failures are counted by the writers). */
function countingLogger(counts: BlockResult): Logger {
  const quiet = (): void => undefined;
  const logger: Logger = {
    error: quiet,
    warn: quiet,
    info: (msg: string) => {
      if (msg.startsWith('nbd write made again')) counts.triesMadeAgain++;
    },
    debug: quiet,
    child: () => logger,
  };
  return logger;
}
