/**
 * The `strata` command line: a local dev cluster, a node, volume management, page transfer
 * and status. `main(argv, io)` runs one command and resolves with the exit code: 0 success,
 * 1 a failed operation, 2 a usage error. Errors are printed as `strata: <code>: <message>`.
 *
 * The argument parser is hand-written and small: flags are `--name value` or `--name=value`,
 * may appear anywhere after the command, `--` ends the flags, and `-` is a positional (stdin or
 * stdout). See `HELP_TEXT` and docs/cli.md.
 */
import * as fs from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import { appendRange, connect as connectClient, SHARD_CHECK_WAIT_MS_MAX } from './client';
import type { ConnectOptions, ShardCheck, StrataClient } from './client';
import { ConfigError, NATS_URL_DEFAULT, CLUSTER_DEFAULT, checkControllersList, clusterNameProblem, natsUrlError, loadNodeConfig } from './config';
import { DEADLINE_AHEAD_MS_MAX } from '../messages/headers';
import { checkToken } from '../messages/subjects';
import type { NodeConfig } from './config';
import { ProtocolError } from '../messages/errors';
import type { ErrorDetails } from '../messages/errors';
import { PAGE_COUNT_MAX, PAGE_SIZES_BYTES, SHARDS_MAX } from '../messages/api';
import type { ShardLsn, VolumeCreateRequest, VolumeInfo } from '../messages/api';
import { bytesText, formatStatus, formatStatusJson } from '../observability/status';
import { NBD_PORT_DEFAULT, nbdUri, startNbdServer } from './nbd';
import { textTable } from './text-table';
import { NATS_ROLES, natsTlsFromFlags, readNatsPassword, renderNatsAuthorization, type NatsUser } from './nats-auth';

/** Most connections `strata nbd --connections-max` serves at once (each holds up to 64 MiB of requests in flight). */
const NBD_CONNECTIONS_MAX = 1024;

/** A bad command line. Exit code 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
  readonly code = 'usage';
}

/** What a command may touch (all replaceable by tests). */
export interface CliIo {
  stdout: Writable;
  stderr: Writable;
  stdin: Readable;
  env: Readonly<Record<string, string | undefined>>;
  /** Opens a client; default `connect` of ./client. */
  connect: (options: ConnectOptions) => Promise<StrataClient>;
}

/** Pages per client call of `put` and `get` (4 MiB of 4 KiB pages); calls run one after another. */
export const TRANSFER_PAGES_PER_CALL = 1024;
/** Most nodes `strata dev` starts. */
export const DEV_NODES_MAX = 16;
/** Most pages one `get` may read (4 GiB of 4 KiB pages). */
export const GET_PAGES_MAX = 2 ** 20;

export const HELP_TEXT = `strata — a replicated page/block storage cluster

Usage: strata <command> [arguments] [flags]

Commands:
  dev [--demo] [--nodes N] [--data-dir D] [--metrics-port N] [--auth]
        Run a local cluster until interrupted: its own nats-server and N node processes
        (default 3; kill one with kill -9 to see failover; n1, n2 and n3 hold the replicated
        volume catalog, and one of them runs the controller); --demo writes, reads back and
        verifies a replicated volume, then exits. --auth: the nats-server admits only the
        cluster's users (strata nats-auth), whose passwords it writes under the data directory.
  node [--config F] [--node-id ID] [--cluster C] [--nats URL] [--data-dir D]
       [--nats-user U --nats-password-file F] [--nats-ca-file F] [--nats-cert-file F --nats-key-file F]
       [--hosts N] [--zone Z] [--controller|--no-controller|--controllers ID,ID,ID [--new-cluster]] [--metrics-port N]
       [--trace-exporters otlp,console] [--sampling off|ratio|always] [--sampling-ratio R]
       [--cache-bytes-max-per-shard B] [--segment-bytes-max B]
       [--checkpoint-every-records N] [--scrub-bytes-per-second B] [--mailbox-requests-max N]
       [--mailbox-bytes-max B] [--host-heap-initial B] [--repair-after-seconds S] [--retain-records N]
       [--space-reserve-bytes B]
        Run one node until SIGINT/SIGTERM (environment: STRATA_NATS_URL, STRATA_CLUSTER,
        STRATA_DATA_DIR, STRATA_NODE_ID, STRATA_ZONE, STRATA_HOSTS, STRATA_METRICS_PORT,
        STRATA_REPAIR_AFTER_SECONDS, STRATA_CONTROLLERS, STRATA_NATS_USER,
        STRATA_NATS_PASSWORD_FILE, STRATA_NATS_CA_FILE, STRATA_NATS_CERT_FILE,
        STRATA_NATS_KEY_FILE, STRATA_TRACE_EXPORTERS, STRATA_SAMPLING, STRATA_SAMPLING_RATIO).
        With --controllers (3..7 node ids, the same list on every node) the catalog is
        replicated on those nodes and the one whose replica leads it runs the controller
        (--new-cluster on the first start of a new cluster: a majority of them elect without
        waiting for all); without, the one node started with --controller keeps it alone. The
        controller's node replaces the replicas of a node silent for --repair-after-seconds
        (default 600; 0 = never).
  volume create NAME --pages N [--page-size 4096|8192] [--shards S] [--stripe-pages P] [--replicas R] [--request-id ID]
        Create a volume of N pages. After a timeout (its outcome unknown), the same command
        with the same --request-id is answered as the first was made (default: a new id).
  volume branch PARENT NAME [--lsns L,L,…] [--request-id ID]
        Create volume NAME as a branch of volume PARENT: the same geometry, each shard
        starting from PARENT's shard as it was at its LSN (one per shard, in shard order;
        default each shard's latest commit). The branch is a volume of its own from then on.
  volume list
        List the volumes.
  volume info NAME
        Show a volume's geometry and the nodes of each shard's replicas.
  volume delete NAME [--request-id ID]
        Delete a volume and its data.
  volume resize NAME --pages N [--request-id ID]
        Grow a volume to N pages (never fewer than it has); the pages added read as zeros
        until written. An NBD client connected to it sees the new size once it reconnects.
  put VOLUME PAGE FILE|-
        Write the bytes of FILE (or stdin) to pages PAGE, PAGE+1, …; the last page is
        padded with zeros.
  get VOLUME PAGE [--count N] [--lsn L|SHARD:LSN,…] FILE|-
        Read N pages (default 1) from PAGE on into FILE (or stdout): as of LSN L on every
        shard, or of each named shard's LSN (as put and get print them), if given.
  zero VOLUME PAGE --count N
        Make pages PAGE..PAGE+N-1 zeros: one small record per shard whatever N, and their
        space is given back at the shards' next checkpoints (earlier LSNs still read the data).
  map VOLUME [PAGE] [--count N]
        Which pages of PAGE..PAGE+N-1 (default: the whole volume) hold data: ranges of pages
        written and not made zeros since; the other pages read as zeros.
  bench [--short] [--workload W] [--queue-depth N] [--pages-per-request N] [--replicas 1|3] [--nats URL --cluster C] …
        Benchmark a fresh in-process cluster (or a running one) against raw disk, NATS echo
        and JetStream baselines; without --workload runs the target suite. "strata bench --help".
  nbd VOLUME|--all [--listen HOST:PORT] [--read-only] [--connections-max N]
        Export VOLUME (or, with --all, every volume, by export name) over NBD until
        SIGINT/SIGTERM, for qemu, nbdcopy, nbd-client or fio (docs/nbd.md); listens on
        127.0.0.1:10809 unless told otherwise; --read-only refuses writes.
  status [--json]
        Status of the cluster: nodes (a dead one shows DEAD), volumes, and per shard its
        leader, term, commit LSN, replicas and their lag and health.
  shard force-vote VOLUME SHARD --node NODE
        Operator override: NODE's replica of the shard votes again although it is repairing
        (its log lost records to damage), accepting that records only it had acknowledged
        stay lost. For a shard left without a majority of whole replicas (docs/replication.md).
  shard move VOLUME SHARD --from NODE --to NODE
        Operator action: move the shard's replica on node NODE (--from) to another, live
        node (--to) that holds none of it, to replace a dead node's replica or to drain a
        node. Done once the shard's leader has committed the new set; the replica on
        --from is then destroyed. Run again with the same nodes, it finishes a move that
        was cut short (docs/replication.md).
  shard handover VOLUME SHARD [--to NODE]
        Operator action: the shard's leader hands its leadership to the replica on NODE (by
        default the one whose log holds the most), which leads the next term at once, without
        an election timeout: before maintenance of the leader's node, say. A node stopped
        cleanly does so for every shard it leads (docs/replication.md). With a replicated
        controller, strata-catalog 0 is the catalog shard: handed over, the controller moves.
  shard check VOLUME [SHARD] [--pages] [--wait-ms MS]
        Operator check: do the shard's replicas (without SHARD: every shard's) hold the same
        committed records? Each replica's node digests the LSNs they all hold, in steps; a
        step that differs is halved down to the first LSN that differs. With --pages, their
        pages too, as of an LSN they all applied, down to the first page that differs. A
        replica behind the commit LSN is waited for first, up to --wait-ms (default 5000,
        0..60000). Exit code 1 when they differ.
  drain NODE [--undo]
        Operator action: mark NODE draining (durably, in the catalog). The controller moves
        each of its replicas to another node, as it replaces a dead node's, and places
        nothing new on it; answered at once with the replicas still on it (strata status
        and volume info show the moves). --undo takes the mark off (docs/replication.md).
  rebalance [--stop]
        Operator action: have the controller even out the replicas over the live nodes that
        are not draining (after nodes were added, or repairs emptied some), one move at a
        time, until the most and the least loaded differ by at most one. Answered at once
        with each node's count; run again to follow. --stop calls it off.
  controllers [ID,ID,ID]
        With a replicated controller: the controller nodes in force (without IDs), or
        changed to IDs (3..7 node ids): each node added must be live and opens a replica
        of the catalog shard, which then changes its replica set through a joint
        configuration; the nodes taken out destroy theirs. Run again with the same IDs, it
        answers the change done. List the new set in --controllers of every node
        (docs/replication.md, "Changing the controller nodes").
  catalog recover [--apply]
        Operator action after the controller lost its data directory: find on the live
        nodes the volumes they hold that the catalog lacks, and with --apply add them
        (without: only say which). Each node reopens its replicas of them, and one that
        lost its data is given them back by its peers (docs/replication.md).
  inspect PATH [--shard VOLUME/SHARD] [--verify] [--records [--from L] [--to L] [--limit N]]
          [--page P [--lsn L] [--out FILE]] [--catalog [--lsn L]] [--json]
        Read a node's data directory (or one replica's) offline, changing nothing: each
        replica's term and vote, replica set, log, images and damage, and what the node's
        next open would change (a torn tail cut); --verify checks every image page too.
        --records lists a replica's log records, --page shows a page as of an LSN
        (GetPage@LSN), --catalog the volume catalog a controller node holds (as of an LSN).
        Exit code 1 when a replica is damaged (docs/cli.md).
  inspect PATH PATH… --compare [--shard VOLUME/SHARD]
        Compare the replicas of a shard in several nodes' data directories (of a stopped
        cluster), offline: their logs record for record where they hold an LSN in the same
        term, and every page as of the last such LSN. Exit code 1 when they differ.
  nats-auth [--cluster C] [--clients A,B,…]
        Print the authorization block of a nats-server config that keeps applications
        off the subjects the nodes trust each other on, and each user off the replies
        of the others; --clients adds application users (docs/replication.md).
  help
        This text.

Flags of the commands that talk to a cluster (volume, put, get, zero, map, nbd, status, shard, drain,
rebalance, controllers, catalog):
  --nats URL      NATS server (default $STRATA_NATS_URL or ${NATS_URL_DEFAULT})
  --nats-user U --nats-password-file F
                  NATS user and a file holding its password, for a server that asks
                  (default $STRATA_NATS_USER and $STRATA_NATS_PASSWORD_FILE)
  --nats-ca-file F [--nats-cert-file F --nats-key-file F]
                  TLS: the CA of the server's certificate, and this side's certificate
                  and key for a server that verifies clients ($STRATA_NATS_CA_FILE, …)
  --cluster C     cluster name (default $STRATA_CLUSTER or ${CLUSTER_DEFAULT})
  --timeout MS    bound on each operation in ms (default 10000)
  --json          print JSON instead of text

Exit codes: 0 success, 1 the operation failed, 2 usage error.
`;

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

type FlagKind = 'boolean' | 'string' | 'integer';

interface CommandSpec {
  positionals: readonly string[];
  /** Positionals that must be given; default all of them. */
  positionalsMin?: number;
  /** The last positional may be given up to this many times in all; default once. */
  positionalsMax?: number;
  flags: Readonly<Record<string, FlagKind>>;
  required?: readonly string[];
  /** Accepts the global client flags (--nats, --cluster, --timeout, --json). */
  client: boolean;
}

const CLIENT_FLAGS: Readonly<Record<string, FlagKind>> = {
  nats: 'string',
  'nats-user': 'string',
  'nats-password-file': 'string',
  'nats-ca-file': 'string',
  'nats-cert-file': 'string',
  'nats-key-file': 'string',
  cluster: 'string',
  timeout: 'integer',
  json: 'boolean',
};

const COMMANDS: Readonly<Record<string, CommandSpec>> = {
  dev: {
    positionals: [],
    flags: { demo: 'boolean', nodes: 'integer', 'data-dir': 'string', 'metrics-port': 'integer', auth: 'boolean' },
    client: false,
  },
  'volume create': {
    positionals: ['NAME'],
    flags: { pages: 'integer', 'page-size': 'integer', shards: 'integer', 'stripe-pages': 'integer', replicas: 'integer', 'request-id': 'string' },
    required: ['pages'],
    client: true,
  },
  'volume branch': { positionals: ['PARENT', 'NAME'], flags: { lsns: 'string', 'request-id': 'string' }, client: true },
  'volume list': { positionals: [], flags: {}, client: true },
  'volume info': { positionals: ['NAME'], flags: {}, client: true },
  'volume delete': { positionals: ['NAME'], flags: { 'request-id': 'string' }, client: true },
  'volume resize': { positionals: ['NAME'], flags: { pages: 'integer', 'request-id': 'string' }, required: ['pages'], client: true },
  put: { positionals: ['VOLUME', 'PAGE', 'FILE'], flags: {}, client: true },
  get: { positionals: ['VOLUME', 'PAGE', 'FILE'], flags: { count: 'integer', lsn: 'string' }, client: true },
  zero: { positionals: ['VOLUME', 'PAGE'], flags: { count: 'integer' }, required: ['count'], client: true },
  map: { positionals: ['VOLUME', 'PAGE'], positionalsMin: 1, flags: { count: 'integer' }, client: true },
  nbd: { positionals: ['VOLUME'], positionalsMin: 0, flags: { listen: 'string', 'read-only': 'boolean', all: 'boolean', 'connections-max': 'integer' }, client: true },
  status: { positionals: [], flags: {}, client: true },
  'shard force-vote': { positionals: ['VOLUME', 'SHARD'], flags: { node: 'string' }, required: ['node'], client: true },
  'shard move': { positionals: ['VOLUME', 'SHARD'], flags: { from: 'string', to: 'string' }, required: ['from', 'to'], client: true },
  'shard handover': { positionals: ['VOLUME', 'SHARD'], flags: { to: 'string' }, client: true },
  'shard check': { positionals: ['VOLUME', 'SHARD'], positionalsMin: 1, flags: { pages: 'boolean', 'wait-ms': 'integer' }, client: true },
  'catalog recover': { positionals: [], flags: { apply: 'boolean' }, client: true },
  drain: { positionals: ['NODE'], flags: { undo: 'boolean' }, client: true },
  controllers: { positionals: ['IDS'], positionalsMin: 0, flags: {}, client: true },
  rebalance: { positionals: [], flags: { stop: 'boolean' }, client: true },
  'nats-auth': { positionals: [], flags: { cluster: 'string', clients: 'string' }, client: false },
  inspect: {
    positionals: ['PATH'],
    positionalsMax: 16,
    flags: { compare: 'boolean', shard: 'string', verify: 'boolean', records: 'boolean', from: 'integer', to: 'integer', limit: 'integer', page: 'integer', lsn: 'integer', out: 'string', catalog: 'boolean', json: 'boolean' },
    client: false,
  },
  help: { positionals: [], flags: {}, client: false },
};

/** A parsed command line. `node` keeps its arguments raw (`rest`) for loadNodeConfig. */
export interface ParsedArgs {
  /** `dev`, `node`, `volume create`, `volume branch`, `volume list`, `volume info`, `volume delete`, `volume resize`, `put`, `get`, `zero`, `map`, `nbd`, `status`, `shard force-vote`, `shard move`, `shard handover`, `shard check`, `drain`, `rebalance`, `controllers`, `catalog recover`, `nats-auth`, `inspect`, `help`. */
  command: string;
  positionals: string[];
  flags: Record<string, string | number | boolean>;
  /** `node` only: its arguments, unparsed. */
  rest: string[];
}

const DECIMAL_PATTERN = /^(0|[1-9][0-9]*)$/;

function parseInteger(flag: string, value: string): number {
  if (!DECIMAL_PATTERN.test(value)) throw new UsageError(`${flag}: expected a non-negative integer, got ${JSON.stringify(value)}`);
  const n = value.length <= 16 ? Number(value) : NaN;
  if (!Number.isSafeInteger(n)) throw new UsageError(`${flag}: ${value} is too large (at most ${Number.MAX_SAFE_INTEGER})`);
  return n;
}

/** Where `get --lsn` reads: one LSN for every shard (`L`), or one per shard named (`S:L,S:L…`). */
export type ReadAt = { lsn: number } | { lsns: ShardLsn[] };

/**
 * Parses `--lsn`: `L`, or `SHARD:LSN` pairs separated by commas, each shard once (the form that
 * `put` and `get` print). UsageError otherwise.
 */
export function parseReadAt(value: string): ReadAt {
  if (DECIMAL_PATTERN.test(value)) return { lsn: parseInteger('--lsn', value) };
  const parts = value.split(',');
  if (parts.length > SHARDS_MAX) throw new UsageError(`--lsn: at most ${SHARDS_MAX} shards, got ${parts.length}`);
  const seen = new Set<number>();
  const lsns = parts.map((part) => {
    const pair = part.split(':');
    if (pair.length !== 2) {
      throw new UsageError(`--lsn: expected L or SHARD:LSN[,SHARD:LSN…], got ${JSON.stringify(part)}${parts.length > 1 ? ` in ${JSON.stringify(value)}` : ''}`);
    }
    const shard = parseInteger('--lsn shard', pair[0]!);
    if (shard >= SHARDS_MAX) throw new UsageError(`--lsn: shard ${shard} is out of range (at most ${SHARDS_MAX - 1})`);
    if (seen.has(shard)) throw new UsageError(`--lsn: shard ${shard} given twice`);
    seen.add(shard);
    return { shard, lsn: parseInteger('--lsn', pair[1]!) };
  });
  return { lsns };
}

/**
 * Parses `volume branch --lsns`: 1..SHARDS_MAX LSNs separated by commas, one per shard of the
 * parent in shard order (the number is the cluster's to check). UsageError otherwise.
 */
export function parseBranchLsns(value: string): number[] {
  const parts = value.split(',').map((part) => part.trim());
  if (parts.length > SHARDS_MAX) throw new UsageError(`--lsns: at most ${SHARDS_MAX} LSNs (one per shard), got ${parts.length}`);
  return parts.map((part) => {
    if (!DECIMAL_PATTERN.test(part)) {
      throw new UsageError(`--lsns: expected LSN[,LSN…] (one per shard, in shard order), got ${JSON.stringify(part)}${parts.length > 1 ? ` in ${JSON.stringify(value)}` : ''}`);
    }
    return parseInteger('--lsns', part);
  });
}

/**
 * Parses `--listen HOST:PORT` (an IPv6 host in brackets: `[::1]:10809`); PORT 0 takes a free
 * one. UsageError otherwise.
 */
export function parseListen(value: string): { host: string; port: number } {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]]+)):([0-9]+)$/.exec(value);
  if (match === null) throw new UsageError(`--listen: expected HOST:PORT or [IPV6]:PORT, got ${JSON.stringify(value)}`);
  const port = parseInteger('--listen port', match[3]!);
  if (port > 65535) throw new UsageError(`--listen: port ${port} is out of range (0..65535)`);
  return { host: match[1] ?? match[2]!, port };
}

/** `S:L,S:L…` of each shard's LSN, the form `get --lsn` takes. */
export function readAtText(lsns: readonly ShardLsn[]): string {
  return lsns.map((entry) => `${entry.shard}:${entry.lsn}`).join(',');
}

/** The LSN a `put` or `get` prints: the highest, and each shard's when it touched several. */
function lsnText(result: { lsn: number; lsns: readonly ShardLsn[] }): string {
  return result.lsns.length > 1 ? `lsn ${result.lsn}; shard LSNs ${readAtText(result.lsns)}` : `lsn ${result.lsn}`;
}

/**
 * Each shard's LSN over the batches of a `put` or `get`: the highest seen (a later write's; a
 * read's is the same in every batch), starting from the ones asked for.
 */
class ShardLsns {
  private readonly at = new Map<number, number>();
  private readonly touched = new Set<number>();

  constructor(given: readonly ShardLsn[] = []) {
    for (const entry of given) this.at.set(entry.shard, entry.lsn);
  }

  add(lsns: readonly ShardLsn[]): void {
    for (const entry of lsns) {
      this.touched.add(entry.shard);
      this.at.set(entry.shard, Math.max(this.at.get(entry.shard) ?? 0, entry.lsn));
    }
  }

  /** Every shard's LSN known: given or seen. */
  list(): ShardLsn[] {
    return [...this.at].map(([shard, lsn]) => ({ shard, lsn })).sort((a, b) => a.shard - b.shard);
  }

  /** The shards touched: the highest LSN and each one's. */
  result(): { lsn: number; lsns: ShardLsn[] } {
    const lsns = this.list().filter((entry) => this.touched.has(entry.shard));
    return { lsn: lsns.reduce((max, entry) => Math.max(max, entry.lsn), 0), lsns };
  }
}

/** The positionals that are numbers (checked as non-negative integers). */
const NUMBER_POSITIONALS: ReadonlySet<string> = new Set(['PAGE', 'SHARD']);

/** The commands whose second word names the subcommand (`volume create`). */
const COMMAND_GROUPS: ReadonlySet<string> = new Set(['volume', 'shard', 'catalog']);

/**
 * Parses a command line (without `node` and the script path). Throws UsageError for an unknown
 * command or flag, a missing or extra argument, a missing flag value or a non-integer number.
 */
export function parseArgs(argvIn: readonly string[]): ParsedArgs {
  // Global flags may come before the command (`strata --nats URL volume list`): move them right
  // after its word(s), where the command's own flag rules check them, and before any `--` (past
  // which they would be positionals).
  const leading: string[] = [];
  let k = 0;
  while (k < argvIn.length && argvIn[k]!.startsWith('--') && argvIn[k] !== '--') {
    const name = argvIn[k]!.slice(2).split('=')[0]!;
    const kind = CLIENT_FLAGS[name];
    if (kind === undefined) break;
    leading.push(argvIn[k]!);
    if (kind !== 'boolean' && !argvIn[k]!.includes('=') && k + 1 < argvIn.length) leading.push(argvIn[++k]!);
    k++;
  }
  const after = argvIn.slice(k);
  const words = COMMAND_GROUPS.has(after[0] ?? '') ? Math.min(2, after.length) : 1;
  const argv = leading.length > 0 ? [...after.slice(0, words), ...leading, ...after.slice(words)] : argvIn;
  if (argv.length === 0) throw new UsageError('no command given');
  if (leading.length > 0 && (argv[0] === 'node' || argv[0] === 'dev' || argv[0] === 'help')) {
    throw new UsageError(`${argv[0]}: ${leading[0]} goes after the command`);
  }
  const first = argv[0]!;
  if (first === '--help' || first === '-h') return { command: 'help', positionals: [], flags: {}, rest: [] };
  // `strata node --help` as any other command's: the list of commands (node's flags are there).
  if (first === 'node' && argv.slice(1).some((a) => a === '--help' || a === '-h')) return { command: 'help', positionals: [], flags: {}, rest: [] };
  if (first === 'node') return { command: 'node', positionals: [], flags: {}, rest: argv.slice(1) };
  if (first === 'bench') return { command: 'bench', positionals: [], flags: {}, rest: argv.slice(1) };
  if (first.startsWith('-')) throw new UsageError(`expected a command before ${first}`);

  let command = first;
  let at = 1;
  if (COMMAND_GROUPS.has(first)) {
    const sub = argv[1];
    // `strata volume --help` as any other command's: the list of commands.
    if (sub === '--help' || sub === '-h') return { command: 'help', positionals: [], flags: {}, rest: [] };
    if (sub === undefined || sub.startsWith('-')) {
      throw new UsageError(first === 'volume' ? 'volume: expected create, branch, list, info, delete or resize' : first === 'shard' ? 'shard: expected force-vote, move, handover or check' : 'catalog: expected recover');
    }
    command = `${first} ${sub}`;
    at = 2;
  }
  const spec = COMMANDS[command];
  if (spec === undefined) {
    throw new UsageError(COMMAND_GROUPS.has(first) ? `${first}: unknown subcommand ${JSON.stringify(argv[1])}` : `unknown command ${JSON.stringify(first)}`);
  }
  const allowed: Record<string, FlagKind> = { ...(spec.client ? CLIENT_FLAGS : {}), ...spec.flags };
  const positionals: string[] = [];
  const flags: Record<string, string | number | boolean> = {};
  let flagsEnded = false;
  for (let i = at; i < argv.length; i++) {
    const arg = argv[i]!;
    // A negative number where a number positional (PAGE, SHARD) goes is a bad number, not a flag.
    const numberExpected = NUMBER_POSITIONALS.has(spec.positionals[positionals.length] ?? '') && /^-[0-9]/.test(arg);
    if (flagsEnded || !arg.startsWith('-') || arg === '-' || numberExpected) {
      positionals.push(arg);
      continue;
    }
    if (arg === '--') {
      flagsEnded = true;
      continue;
    }
    if (arg === '--help' || arg === '-h') return { command: 'help', positionals: [], flags: {}, rest: [] };
    if (!arg.startsWith('--')) throw new UsageError(`${command}: unknown flag ${arg}`);
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    const kind = allowed[name];
    if (kind === undefined) throw new UsageError(`${command}: unknown flag --${name}`);
    if (Object.prototype.hasOwnProperty.call(flags, name)) throw new UsageError(`${command}: --${name} given twice`);
    let value: string;
    if (eq >= 0) {
      value = arg.slice(eq + 1);
      if (kind === 'boolean') throw new UsageError(`--${name} takes no value`);
    } else if (kind === 'boolean') {
      flags[name] = true;
      continue;
    } else {
      const next = argv[i + 1];
      if (next === undefined || (next.startsWith('--') && next !== '--')) throw new UsageError(`--${name}: expected a value`);
      value = next;
      i++;
    }
    if (value === '') throw new UsageError(`--${name}: expected a value`);
    flags[name] = kind === 'integer' ? parseInteger(`--${name}`, value) : value;
  }
  if (positionals.length < (spec.positionalsMin ?? spec.positionals.length)) {
    throw new UsageError(`${command}: missing ${spec.positionals.slice(positionals.length, spec.positionalsMin ?? spec.positionals.length).join(' ')}`);
  }
  const most = spec.positionalsMax ?? spec.positionals.length;
  if (positionals.length > most) {
    // The first one past the most it takes (with a variable count, how many that is).
    throw new UsageError(`${command}: unexpected argument ${JSON.stringify(positionals[most])}${spec.positionalsMax !== undefined ? ` (at most ${most})` : ''}`);
  }
  for (const name of spec.required ?? []) {
    if (!Object.prototype.hasOwnProperty.call(flags, name)) throw new UsageError(`${command}: --${name} is required`);
  }
  if (flags['page-size'] !== undefined && !(PAGE_SIZES_BYTES as readonly number[]).includes(flags['page-size'] as number)) {
    throw new UsageError(`--page-size: expected ${PAGE_SIZES_BYTES.join(' or ')}, got ${String(flags['page-size'])}`);
  }
  if (flags.nodes !== undefined && ((flags.nodes as number) < 1 || (flags.nodes as number) > DEV_NODES_MAX)) {
    throw new UsageError(`--nodes: expected 1..${DEV_NODES_MAX}, got ${String(flags.nodes)}`);
  }
  if (flags['metrics-port'] !== undefined && (flags['metrics-port'] as number) > 65535) {
    throw new UsageError(`--metrics-port: expected 0..65535, got ${String(flags['metrics-port'])}`);
  }
  // strata dev gives node i the port N + i.
  const devPorts = command === 'dev' ? ((flags.nodes as number | undefined) ?? 3) : 1;
  if (flags['metrics-port'] !== undefined && (flags['metrics-port'] as number) > 0 && (flags['metrics-port'] as number) + devPorts - 1 > 65535) {
    throw new UsageError(`--metrics-port: the ${devPorts} nodes take ports ${String(flags['metrics-port'])}..${(flags['metrics-port'] as number) + devPorts - 1}, past 65535`);
  }
  if (typeof flags.lsn === 'string') parseReadAt(flags.lsn);
  if (typeof flags.lsns === 'string') parseBranchLsns(flags.lsns);
  // A get's pages come back to this process; a range made zeros, or mapped, carries no page data.
  const countMax = command === 'zero' || command === 'map' ? PAGE_COUNT_MAX : GET_PAGES_MAX;
  if (flags.count !== undefined && ((flags.count as number) < 1 || (flags.count as number) > countMax)) {
    throw new UsageError(`--count: expected 1..${countMax}, got ${String(flags.count)}`);
  }
  if (flags.timeout !== undefined && ((flags.timeout as number) < 1 || (flags.timeout as number) > DEADLINE_AHEAD_MS_MAX)) {
    throw new UsageError(`--timeout: expected 1..${DEADLINE_AHEAD_MS_MAX} ms, got ${String(flags.timeout)}`);
  }
  // As a node checks its own: a name no node can have reaches no cluster.
  if (typeof flags.cluster === 'string') {
    const problem = clusterNameProblem(flags.cluster);
    if (problem !== undefined) throw new UsageError(`--cluster: ${problem}`);
  }
  if (typeof flags.nats === 'string') {
    const message = natsUrlError('--nats', flags.nats);
    if (message !== undefined) throw new UsageError(message);
  }
  if (command === 'put' || command === 'get' || command === 'zero' || (command === 'map' && positionals.length > 1)) parseInteger('PAGE', positionals[1]!);
  if (command === 'shard force-vote' || command === 'shard move' || command === 'shard handover' || (command === 'shard check' && positionals.length > 1)) parseInteger('SHARD', positionals[1]!);
  if (command === 'shard handover' && flags.to !== undefined) {
    try {
      checkToken(flags.to as string, 'to');
    } catch (e) {
      throw new UsageError(`--${(e as Error).message}`);
    }
  }
  if (command === 'shard move') {
    for (const flag of ['from', 'to'] as const) {
      try {
        checkToken(flags[flag] as string, flag);
      } catch (e) {
        throw new UsageError(`--${(e as Error).message}`);
      }
    }
    if (flags.from === flags.to) throw new UsageError(`shard move: --from and --to name the same node ${JSON.stringify(flags.from)}`);
  }
  if (command === 'controllers' && positionals.length === 1) {
    const problem = checkControllersList(positionals[0]!);
    if (problem !== undefined) throw new UsageError(`controllers: ${problem} in ${JSON.stringify(positionals[0])}`);
  }
  if (command === 'drain') {
    try {
      checkToken(positionals[0]!, 'NODE');
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
  if (command === 'nbd') {
    if ((positionals.length === 1) === (flags.all === true)) throw new UsageError(positionals.length === 1 ? 'nbd: give VOLUME or --all, not both' : 'nbd: expected VOLUME or --all');
    if (typeof flags.listen === 'string') parseListen(flags.listen);
    const most = flags['connections-max'];
    if (typeof most === 'number' && (most < 1 || most > NBD_CONNECTIONS_MAX)) throw new UsageError(`--connections-max: expected 1..${NBD_CONNECTIONS_MAX}, got ${most}`);
  }
  return { command, positionals, flags, rest: [] };
}

// ---------------------------------------------------------------------------------------------
// Output helpers
// ---------------------------------------------------------------------------------------------

/** Writes to a stream, waiting for 'drain' when its buffer is full (bounded by the stream). */
async function writeOut(stream: Writable, chunk: string | Uint8Array): Promise<void> {
  if (stream.write(chunk)) return;
  await new Promise<void>((resolve, reject) => {
    const onDrain = (): void => {
      stream.off('error', onError);
      resolve();
    };
    const onError = (err: Error): void => {
      stream.off('drain', onDrain);
      reject(err);
    };
    stream.once('drain', onDrain);
    stream.once('error', onError);
  });
}

function jsonText(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

function volumeLine(v: VolumeInfo): string {
  return `${v.name}\t${v.id}\t${v.pageCount}\t${v.pageSize}\t${v.shards}\t${v.stripePages}\t${v.replicas}\t${v.branch?.parent ?? '-'}`;
}

function volumeText(v: VolumeInfo): string {
  return [
    `name:         ${v.name}`,
    `id:           ${v.id}`,
    `pages:        ${v.pageCount}`,
    `page size:    ${v.pageSize} bytes`,
    `size:         ${v.pageCount * v.pageSize} bytes`,
    `shards:       ${v.shards}`,
    `stripe pages: ${v.stripePages}`,
    `replicas:     ${v.replicas}`,
    `created:      ${new Date(v.createdAt).toISOString()}`,
    ...(v.branch === undefined ? [] : [`branch of:    ${branchPointText(v.branch)}`]),
    // The controller's answer names each shard's nodes (one of a node that hosts the volume, answering for a controller that is down, does not).
    ...(v.replicaSets === undefined ? [] : v.replicaSets.map((r, i) =>
      `${i === 0 ? 'replicas on:  ' : '              '}shard ${r.shard}: ${r.members.join(', ')}${r.moving === undefined ? '' : ` (moving: ${r.moving.from} -> ${r.moving.to})`}`)),
  ].join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

interface Ctx {
  args: ParsedArgs;
  io: CliIo;
  json: boolean;
}

async function withClient<T>(ctx: Ctx, fn: (client: StrataClient) => Promise<T>): Promise<T> {
  const client = await ctx.io.connect(connectOptions(ctx));
  try {
    return await fn(client);
  } finally {
    await client.close();
  }
}

/** The cluster's name: `--cluster` (checked with the flags), else STRATA_CLUSTER, checked as a node checks it, else the default. */
function clusterOf(flag: string | undefined, env: Readonly<Record<string, string | undefined>>): string {
  if (flag !== undefined) return flag;
  const name = env.STRATA_CLUSTER || CLUSTER_DEFAULT;
  const problem = clusterNameProblem(name);
  if (problem !== undefined) throw new UsageError(`STRATA_CLUSTER: ${problem}`);
  return name;
}

/** STRATA_NATS_URL, checked as `--nats` is (with the flags), else the default. */
function natsUrlOf(value: string | undefined): string {
  if (!value) return NATS_URL_DEFAULT;
  const message = natsUrlError('STRATA_NATS_URL', value);
  if (message !== undefined) throw new UsageError(message);
  return value;
}

/** The client's connect options from the flags and the environment. */
function connectOptions(ctx: Ctx): ConnectOptions {
  const { flags } = ctx.args;
  const env = ctx.io.env;
  const servers = (flags.nats as string | undefined) ?? natsUrlOf(env.STRATA_NATS_URL);
  const cluster = clusterOf(flags.cluster as string | undefined, env);
  const options: ConnectOptions = { servers: servers.split(',').map((s) => s.trim()), cluster, name: 'strata-cli' };
  if (flags.timeout !== undefined) options.timeoutMs = flags.timeout as number;
  const user = (flags['nats-user'] as string | undefined) ?? (env.STRATA_NATS_USER || undefined);
  const passwordFile = (flags['nats-password-file'] as string | undefined) ?? (env.STRATA_NATS_PASSWORD_FILE || undefined);
  if (user !== undefined || passwordFile !== undefined) {
    if (passwordFile === undefined) throw new UsageError('--nats-user needs --nats-password-file (or STRATA_NATS_PASSWORD_FILE)');
    if (user === undefined) throw new UsageError('--nats-password-file needs --nats-user (or STRATA_NATS_USER)');
    try {
      Object.assign(options, { user, pass: readNatsPassword(passwordFile) });
    } catch (e) {
      throw new UsageError(`--nats-password-file: ${(e as Error).message}`);
    }
  }
  try {
    // A flag, else its variable: --nats-ca-file, STRATA_NATS_CA_FILE.
    const tls = natsTlsFromFlags((flag) => (flags[flag] as string | undefined) ?? (env[`STRATA_${flag.toUpperCase().replace(/-/g, '_')}`] || undefined));
    if (tls !== undefined) options.tls = tls;
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  return options;
}

/**
 * The `authorization` block of a nats-server config for cluster `cluster`: a user for the nodes,
 * one for applications and one for operators, whose passwords the server reads from its
 * environment (cluster/nats-auth.ts).
 */
export function natsAuthText(cluster: string, clients: readonly string[] = []): string {
  const users: NatsUser[] = [
    ...NATS_ROLES.map((role) => ({ user: `strata-${role}`, role, password: { env: passwordVariable(`strata-${role}`) } })),
    ...clients.map((user) => ({ user, role: 'client' as const, password: { env: passwordVariable(user) } })),
  ];
  return (
    `# The users of Strata cluster ${cluster} (strata nats-auth): nodes connect as strata-node\n` +
    `# (strata node --nats-user strata-node --nats-password-file F), applications as strata-client\n` +
    `# or one of their own (--clients), operators (strata shard force-vote) as strata-operator.\n` +
    `# Each user reads only the replies to its own requests. nats-server reads the passwords from\n` +
    `# the environment variables named; a connection without a user is refused.\n` +
    renderNatsAuthorization(cluster, users)
  );
}

/** The environment variable nats-server reads a user's password from (`strata-client`: STRATA_CLIENT_PASSWORD). */
function passwordVariable(user: string): string {
  return `${user.toUpperCase().replace(/[^A-Z0-9]/g, '_')}_PASSWORD`;
}

/** Bound on `nats-auth --clients`. */
const NATS_AUTH_CLIENTS_MAX = 256;

/** `--clients a,b`: more client users, each a plain token (UsageError otherwise). */
function natsAuthClients(list: string | undefined): string[] {
  if (list === undefined) return [];
  const names = list.split(',').map((n) => n.trim());
  if (names.length > NATS_AUTH_CLIENTS_MAX) throw new UsageError(`--clients: at most ${NATS_AUTH_CLIENTS_MAX} users, got ${names.length}`);
  const seen = new Set<string>(NATS_ROLES.map((role) => `strata-${role}`));
  // Each user's password comes from its own variable: two users of one variable (`a-b` and
  // `A_B`, or `Strata-Node` and the nodes' user) would each log in as the other.
  const variables = new Map<string, string>(NATS_ROLES.map((role) => [passwordVariable(`strata-${role}`), `strata-${role}`]));
  for (const name of names) {
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(name)) throw new UsageError(`--clients: expected user names of 1..64 characters of [A-Za-z0-9_-], got ${JSON.stringify(name)}`);
    if (seen.has(name)) throw new UsageError(`--clients: ${name} given twice (strata-node, strata-client and strata-operator are always there)`);
    seen.add(name);
    const variable = passwordVariable(name);
    const other = variables.get(variable);
    if (other !== undefined) throw new UsageError(`--clients: ${name} and ${other} would read their password from the same variable, ${variable}: give users whose names differ in more than case, '-' and '_'`);
    variables.set(variable, name);
  }
  return names;
}

async function volumeCreate(ctx: Ctx): Promise<void> {
  const { positionals, flags } = ctx.args;
  const request: VolumeCreateRequest = { name: positionals[0]!, pageCount: flags.pages as number };
  if (flags['page-size'] !== undefined) request.pageSize = flags['page-size'] as VolumeCreateRequest['pageSize'];
  if (flags.shards !== undefined) request.shards = flags.shards as number;
  if (flags['stripe-pages'] !== undefined) request.stripePages = flags['stripe-pages'] as number;
  if (flags.replicas !== undefined) request.replicas = flags.replicas as VolumeCreateRequest['replicas'];
  if (flags['request-id'] !== undefined) request.requestId = flags['request-id'] as string;
  const info = await withClient(ctx, (c) => c.createVolume(request));
  await writeOut(
    ctx.io.stdout,
    ctx.json
      ? jsonText(info)
      : `created volume ${info.name} (id ${info.id}): ${info.pageCount} pages of ${info.pageSize} bytes, ` +
          `${info.shards} shard(s), stripe ${info.stripePages} pages, ${info.replicas} replica(s)\n`,
  );
}

/** A branch's branch point as `volume branch` and `volume info` print it: `PARENT (id ID) at lsns L, L…`. */
function branchPointText(b: NonNullable<VolumeInfo['branch']>): string {
  return `${b.parent} (id ${b.parentId}) at lsn${b.lsns.length === 1 ? '' : 's'} ${b.lsns.join(', ')}`;
}

async function volumeBranch(ctx: Ctx): Promise<void> {
  const [parent, name] = ctx.args.positionals as [string, string];
  const lsns = typeof ctx.args.flags.lsns === 'string' ? parseBranchLsns(ctx.args.flags.lsns) : undefined;
  const requestId = ctx.args.flags['request-id'] as string | undefined;
  const info = await withClient(ctx, (c) => c.branchVolume(name, parent, { ...(lsns === undefined ? {} : { lsns }), ...(requestId === undefined ? {} : { requestId }) }));
  await writeOut(
    ctx.io.stdout,
    ctx.json
      ? jsonText(info)
      : `created volume ${info.name} (id ${info.id}): ${info.pageCount} pages of ${info.pageSize} bytes, ` +
          `${info.shards} shard(s), stripe ${info.stripePages} pages, ${info.replicas} replica(s)\n` +
          (info.branch === undefined ? '' : `branch of ${branchPointText(info.branch)}\n`),
  );
}

async function volumeList(ctx: Ctx): Promise<void> {
  const volumes = await withClient(ctx, (c) => c.listVolumes());
  if (ctx.json) return writeOut(ctx.io.stdout, jsonText(volumes));
  // BRANCH_OF: the parent of a branch (`strata volume info` gives its branch point), `-` for none.
  const header = 'NAME\tID\tPAGES\tPAGE_SIZE\tSHARDS\tSTRIPE_PAGES\tREPLICAS\tBRANCH_OF';
  await writeOut(ctx.io.stdout, [header, ...volumes.map(volumeLine)].join('\n') + '\n');
}

async function volumeInfo(ctx: Ctx): Promise<void> {
  const info = await withClient(ctx, (c) => c.volumeInfo(ctx.args.positionals[0]!));
  await writeOut(ctx.io.stdout, ctx.json ? jsonText(info) : volumeText(info));
}

async function volumeDelete(ctx: Ctx): Promise<void> {
  const name = ctx.args.positionals[0]!;
  const requestId = ctx.args.flags['request-id'] as string | undefined;
  await withClient(ctx, (c) => c.deleteVolume(name, requestId === undefined ? {} : { requestId }));
  await writeOut(ctx.io.stdout, ctx.json ? jsonText({ deleted: name }) : `deleted volume ${name}\n`);
}

async function volumeResize(ctx: Ctx): Promise<void> {
  const name = ctx.args.positionals[0]!;
  const requestId = ctx.args.flags['request-id'] as string | undefined;
  const info = await withClient(ctx, (c) => c.resizeVolume(name, ctx.args.flags.pages as number, requestId === undefined ? {} : { requestId }));
  await writeOut(ctx.io.stdout, ctx.json ? jsonText(info) : `volume ${info.name} (id ${info.id}) has ${info.pageCount} pages of ${info.pageSize} bytes (${info.pageCount * info.pageSize} bytes)\n`);
}

async function status(ctx: Ctx): Promise<void> {
  const reply = await withClient(ctx, (c) => c.status());
  const out = ctx.io.stdout as Writable & { isTTY?: boolean };
  // Colors only on a terminal (NO_COLOR turns them off, as everywhere).
  const color = out.isTTY === true && !ctx.io.env.NO_COLOR;
  await writeOut(ctx.io.stdout, ctx.json ? formatStatusJson(reply) : formatStatus(reply, { color }));
}

async function shardForceVote(ctx: Ctx): Promise<void> {
  const [volume, shardText] = ctx.args.positionals as [string, string];
  const node = ctx.args.flags.node as string;
  const r = await withClient(ctx, (c) => c.forceVote(volume, parseInteger('SHARD', shardText), node));
  const text = r.discarded !== undefined
    ? `node ${r.node}: the only copy of shard ${r.shard} of ${volume} serves again (term ${r.term}); its log is cut after LSN ${r.discarded.keptLsn}: the damaged records and those after them, from LSN ${r.discarded.fromLsn} on, are lost\n`
    : r.wasRepairing
    ? `node ${r.node}: its replica of shard ${r.shard} of ${volume} votes again (term ${r.term}); records only it had acknowledged, and lost, stay lost\n`
    : `node ${r.node}: its replica of shard ${r.shard} of ${volume} was not repairing; nothing changed\n`;
  await writeOut(ctx.io.stdout, ctx.json ? jsonText(r) : text);
}

async function shardMove(ctx: Ctx): Promise<void> {
  const [volume, shardText] = ctx.args.positionals as [string, string];
  const from = ctx.args.flags.from as string;
  const to = ctx.args.flags.to as string;
  const r = await withClient(ctx, (c) => c.moveReplica(volume, parseInteger('SHARD', shardText), { from, to }));
  const text = `moved shard ${r.shard} of ${r.volume} from ${from} to ${to}: its replicas are on ${r.members.join(', ')} (term ${r.term}, lsn ${r.lsn})\n`;
  await writeOut(ctx.io.stdout, ctx.json ? jsonText({ ...r, from, to }) : text);
}

async function shardHandover(ctx: Ctx): Promise<void> {
  const [volume, shardText] = ctx.args.positionals as [string, string];
  const to = ctx.args.flags.to as string | undefined;
  const r = await withClient(ctx, (c) => c.handOver(volume, parseInteger('SHARD', shardText), to === undefined ? {} : { to }));
  const text = r.to === r.node
    ? `node ${r.node} leads shard ${r.shard} of ${volume} already (term ${r.term}): nothing to hand over\n`
    : `node ${r.node} handed the leadership of shard ${r.shard} of ${volume} (term ${r.term}) to ${r.to}\n`;
  await writeOut(ctx.io.stdout, ctx.json ? jsonText({ ...r, volume }) : text);
}

/** `strata shard check VOLUME SHARD`: exit 1 when the replicas' committed records differ, or fewer than two answered. */
async function shardCheck(ctx: Ctx): Promise<number> {
  const [name, shardText] = ctx.args.positionals as [string, string | undefined];
  const shard = shardText === undefined ? undefined : parseInteger('SHARD', shardText);
  const waitMs = ctx.args.flags['wait-ms'] as number | undefined;
  if (waitMs !== undefined && (waitMs < 0 || waitMs > SHARD_CHECK_WAIT_MS_MAX)) throw new UsageError(`--wait-ms: expected 0..${SHARD_CHECK_WAIT_MS_MAX}, got ${waitMs}`);
  // Without SHARD: every shard of the volume, one after another.
  const results = await withClient(ctx, async (client) => {
    const shards = shard !== undefined ? [shard] : Array.from({ length: (await client.volumeInfo(name)).shards }, (_, s) => s);
    const out: ShardCheck[] = [];
    for (const s of shards) out.push(await client.checkShard(name, s, { pages: ctx.args.flags.pages === true, ...(waitMs !== undefined ? { waitMs } : {}) }));
    return out;
  });
  await writeOut(ctx.io.stdout, ctx.json ? jsonText(shard !== undefined ? results[0] : results) : results.map(shardCheckText).join('\n'));
  let code = 0;
  for (const r of results) {
    if (r.differs !== undefined || r.pages?.differs !== undefined) {
      if (r.differs !== undefined) await writeOut(ctx.io.stderr, `strata: corruption: the replicas of shard ${r.shard} of ${name} hold different records at LSN ${r.differs.lsn}\n`);
      if (r.pages?.differs !== undefined) await writeOut(ctx.io.stderr, `strata: corruption: the replicas of shard ${r.shard} of ${name} read different data at page ${r.pages.differs.page} as of LSN ${r.pages.lsn!}\n`);
      code = 1;
    } else if (r.replicas.filter((x) => x.error === undefined).length < 2) {
      await writeOut(ctx.io.stderr, `strata: unavailable: fewer than two replicas of shard ${r.shard} of ${name} answered: nothing compared\n`);
      code = 1;
    }
  }
  return code;
}

function shardCheckText(r: ShardCheck): string {
  const hex = (d: number | undefined): string => (d === undefined ? '-' : d.toString(16).padStart(8, '0'));
  const head =
    r.differs !== undefined ? `DIFFER at LSN ${r.differs.lsn}: ${Object.entries(r.differs.digests).map(([n, d]) => `${n} ${hex(d)}`).join(', ')}`
      : r.range === undefined ? 'nothing compared (fewer than two replicas answered, or they hold no committed LSN in common)'
      : 'the same';
  const rows = [
    ['NODE', 'ROLE', 'TERM', 'LOG', 'COMMIT', 'DIGEST'],
    ...r.replicas.map((x) =>
      x.error !== undefined ? [x.node, '-', '-', '-', '-', `no answer: ${x.error}`] : [x.node, x.role!, String(x.term), `${x.firstLsn}..${x.lastLsn}`, String(x.commitLsn), hex(x.digest)],
    ),
  ];
  const p = r.pages;
  const pages =
    p === undefined ? ''
      : p.skipped !== undefined ? `pages: not compared (${p.skipped})\n`
      : p.differs !== undefined ? `pages as of LSN ${p.lsn!}, ${p.steps} step(s): DIFFER at page ${p.differs.page}: ${Object.entries(p.differs.digests).map(([n, d]) => `${n} ${hex(d)}`).join(', ')}\n`
      : `pages as of LSN ${p.lsn!}, ${p.steps} step(s): ${p.compared} compared, the same\n`;
  const w = r.waited;
  const waited =
    w === undefined ? ''
      : w.behind.length === 0 ? `waited ${w.ms} ms for the replicas to reach LSN ${w.target}\n`
      : `waited ${w.ms} ms: ${w.behind.join(', ')} still behind LSN ${w.target} (compared as far as every replica holds${r.pages !== undefined ? ' and has applied' : ''})\n`;
  const restarts = r.restarts === undefined ? '' : `compared again ${r.restarts} time(s): a replica's checkpoint let go of what was being compared\n`;
  return `shard ${r.shard} of ${r.volume} (${r.volumeId})${r.range !== undefined ? `: committed LSNs ${r.range.fromLsn}..${r.range.toLsn}` : ''}, ${r.steps} step(s): ${head}\n${textTable(rows)}${waited}${restarts}${pages}`;
}

async function drain(ctx: Ctx): Promise<void> {
  const [node] = ctx.args.positionals as [string];
  const undo = ctx.args.flags.undo === true;
  const r = await withClient(ctx, (c) => c.drainNode(node, { undo }));
  const held = `${r.replicas} replica${r.replicas === 1 ? '' : 's'}`;
  const text = r.draining
    ? r.replicas === 0
      ? `node ${r.node} is draining: it holds no replica, nothing new is placed on it\n`
      : `node ${r.node} is draining: the controller moves its ${held} to other nodes (strata status shows the moves; run again to see how many are left)\n`
    : `node ${r.node} is no longer draining: it holds ${held}\n`;
  await writeOut(ctx.io.stdout, ctx.json ? jsonText(r) : text);
}

async function controllers(ctx: Ctx): Promise<void> {
  const [ids] = ctx.args.positionals;
  const r = await withClient(ctx, (c) => c.controllers(ids === undefined ? undefined : ids.split(',').map((x) => x.trim())));
  let text: string;
  if (ids === undefined) {
    text = `controller nodes: ${r.members.join(', ')} (the controller runs on ${r.node}, term ${r.term})\n`;
  } else if (!r.changed) {
    text = `controller nodes: ${r.members.join(', ')}, unchanged (the controller runs on ${r.node})\n`;
  } else {
    text = `controller nodes: ${r.members.join(', ')}, were ${r.prior.join(', ')} (committed at LSN ${r.lsn} of the catalog shard, term ${r.term})\n`;
    if (r.left.length > 0) text += `taken out, their replica of the catalog shard destroyed: ${r.left.join(', ')}\n`;
    if (r.leaving.length > 0) text += `taken out, destroying their replica once they hear from the controller: ${r.leaving.join(', ')}\n`;
    text += `list them in --controllers of every node: --controllers ${r.members.join(',')}\n`;
  }
  await writeOut(ctx.io.stdout, ctx.json ? jsonText(r) : text);
}

async function rebalance(ctx: Ctx): Promise<void> {
  const stop = ctx.args.flags.stop === true;
  const r = await withClient(ctx, (c) => c.rebalance({ stop }));
  // The shards each node leads, from a controller that counts them.
  const leaders = r.nodes.length > 0 && r.nodes.every((n) => n.leaders !== undefined) ? `; leaders ${r.nodes.map((n) => `${n.node} ${n.leaders}`).join(', ')}` : '';
  const counts = (r.nodes.map((n) => `${n.node} ${n.replicas}`).join(', ') || 'no live node') + leaders;
  const text = r.rebalancing
    ? `rebalancing: replicas per node ${counts} (one move at a time; run again to follow, --stop to call it off)\n`
    : stop
      ? `no rebalance under way: replicas per node ${counts}\n`
      : `balanced: replicas per node ${counts}\n`;
  await writeOut(ctx.io.stdout, ctx.json ? jsonText(r) : text);
}

async function catalogRecover(ctx: Ctx): Promise<void> {
  const apply = ctx.args.flags.apply === true;
  const r = await withClient(ctx, (c) => c.recoverCatalog({ apply }));
  if (ctx.json) {
    await writeOut(ctx.io.stdout, jsonText(r));
    return;
  }
  const lines: string[] = [];
  const more = (shown: number, all: number): string => (all > shown ? `  … and ${all - shown} more\n` : '');
  const geometry = (v: { shards: number; replicas: number }): string => `${v.shards} shard${v.shards === 1 ? '' : 's'}, ${v.replicas} replica${v.replicas === 1 ? '' : 's'}`;
  lines.push(`asked ${r.nodesAsked} live node${r.nodesAsked === 1 ? '' : 's'} for their records${r.nodesFailed.length === 0 ? '' : `; ${r.nodesFailed.length} did not answer (what only they hold is not found)`}\n`);
  for (const f of r.nodesFailed) lines.push(`  ${f.node}: ${f.error}\n`);
  if (r.recoveredCount === 0) {
    // "Every volume" only when no node failed and none was left out.
    lines.push(r.nodesFailed.length === 0 && r.skippedCount === 0 ? 'no volume to recover: the catalog lists every volume the nodes hold\n' : 'no volume to recover\n');
  }
  else lines.push(`${apply ? 'recovered' : 'would recover'} ${r.recoveredCount} volume${r.recoveredCount === 1 ? '' : 's'}:\n`);
  for (const v of r.recovered) lines.push(`  ${v.name} (${v.id}, ${geometry(v)})\n`);
  lines.push(more(r.recovered.length, r.recoveredCount));
  if (r.skippedCount > 0) lines.push(`left out ${r.skippedCount} volume${r.skippedCount === 1 ? '' : 's'}:\n`);
  for (const v of r.skipped) lines.push(`  ${v.name} (${v.id}): ${v.reason ?? ''}\n`);
  lines.push(more(r.skipped.length, r.skippedCount));
  if (!apply && r.recoveredCount > 0) lines.push('nothing changed: run again with --apply to add them\n');
  await writeOut(ctx.io.stdout, lines.join(''));
}

/** Reads up to `bytes` bytes from a source; fewer only at its end. */
type ChunkReader = (bytes: number) => Promise<Uint8Array>;

function fileReader(fd: fs.promises.FileHandle): ChunkReader {
  return async (bytes) => {
    const buf = new Uint8Array(bytes);
    let filled = 0;
    while (filled < bytes) {
      const { bytesRead } = await fd.read(buf, filled, bytes - filled, null);
      if (bytesRead === 0) break;
      filled += bytesRead;
    }
    return buf.subarray(0, filled);
  };
}

function streamReader(stream: Readable): ChunkReader {
  const iterator = stream[Symbol.asyncIterator]() as AsyncIterator<Uint8Array | string>;
  let pending: Uint8Array = new Uint8Array(0);
  let done = false;
  return async (bytes) => {
    const parts: Uint8Array[] = [];
    let have = 0;
    while (have < bytes) {
      if (pending.byteLength === 0) {
        if (done) break;
        const next = await iterator.next();
        if (next.done === true) {
          done = true;
          break;
        }
        pending = typeof next.value === 'string' ? Buffer.from(next.value) : next.value;
        continue;
      }
      const take = Math.min(pending.byteLength, bytes - have);
      parts.push(pending.subarray(0, take));
      pending = pending.subarray(take);
      have += take;
    }
    return Buffer.concat(parts, have);
  };
}

async function zero(ctx: Ctx): Promise<void> {
  const [volumeName, pageText] = ctx.args.positionals as [string, string];
  const first = parseInteger('PAGE', pageText);
  const count = ctx.args.flags['count'] as number;
  const result = await withClient(ctx, async (client) => {
    const lsns = new ShardLsns();
    lsns.add((await client.volume(volumeName).zeroPages(first, count)).lsns);
    return { volume: volumeName, page: first, pages: count, ...lsns.result() };
  });
  await writeOut(ctx.io.stdout, ctx.json ? jsonText(result) : `made ${volumeName} pages ${first}..${first + count - 1} zeros (${lsnText(result)})\n`);
}

/** Refuses a PAGE at or past the end of a volume (`out_of_range`, naming PAGE). */
function checkPageInVolume(page: number, volumeName: string, pageCount: number): void {
  if (page >= pageCount) throw new ProtocolError('out_of_range', `page ${page} is past the end of ${volumeName} (${pageCount} pages)`, { page, pageCount });
}

/** Most ranges `strata map` prints: past them it stops and says where to go on from. */
export const MAP_RANGES_PRINTED_MAX = 65_536;

async function map(ctx: Ctx): Promise<void> {
  const [volumeName, pageText] = ctx.args.positionals as [string, string | undefined];
  const result = await withClient(ctx, async (client) => {
    const volume = client.volume(volumeName);
    const first = pageText === undefined ? 0 : parseInteger('PAGE', pageText);
    const info = await client.volumeInfo(volumeName);
    // PAGE first: without --count, a count past the end would be named although none was given.
    checkPageInVolume(first, volumeName, info.pageCount);
    const count = (ctx.args.flags['count'] as number | undefined) ?? info.pageCount - first;
    const lsns = new ShardLsns();
    const ranges: Array<{ first: number; count: number }> = [];
    // Each answer goes as far as its shards' bounded answers do; asked again from its end.
    let end = first;
    while (end < first + count && ranges.length < MAP_RANGES_PRINTED_MAX) {
      const m = await volume.pagesWithData(end, first + count - end);
      lsns.add(m.lsns);
      for (const r of m.ranges) appendRange(ranges, r.first, r.count);
      end = m.end;
    }
    if (ranges.length > MAP_RANGES_PRINTED_MAX) {
      end = ranges[MAP_RANGES_PRINTED_MAX]!.first;
      ranges.length = MAP_RANGES_PRINTED_MAX;
    }
    const pages = ranges.reduce((n, r) => n + r.count, 0);
    return { volume: volumeName, page: first, count, end, pageSize: info.pageSize, pages, ranges, ...lsns.result() };
  });
  if (ctx.json) {
    await writeOut(ctx.io.stdout, jsonText(result));
    return;
  }
  const { page: first, count, end, pages, ranges } = result;
  const lines = [
    `${volumeName} pages ${first}..${end - 1}: ${pages} page(s) in ${ranges.length} range(s) hold data (${bytesText(pages * result.pageSize)}); the others read as zeros (${lsnText(result)})`,
  ];
  if (end < first + count) lines.push(`stopped after ${MAP_RANGES_PRINTED_MAX} ranges: run \`strata map ${volumeName} ${end} --count ${first + count - end}\` for the rest`);
  if (ranges.length > 0) lines.push(textTable([['FIRST', 'LAST', 'PAGES'], ...ranges.map((r) => [String(r.first), String(r.first + r.count - 1), String(r.count)])]).trimEnd());
  await writeOut(ctx.io.stdout, lines.join('\n') + '\n');
}

/**
 * A failed batch of a `put`, saying what the batches before it wrote (they stay written) and
 * which pages the failed one may have written in part; the code stays the cause's, and
 * `details` says the same (`written` pages from `page`, then `partlyWritten` pages).
 */
function putProgressError(err: unknown, first: number, page: number, count: number): unknown {
  const code = errorCode(err);
  const done = page === first ? '' : `pages ${first}..${page - 1} were written; `;
  const message = `${errorMessage(err, code)} (${done}pages ${page}..${page + count - 1} may be partly written)`;
  const details = { ...((err as { details?: ErrorDetails } | null)?.details ?? {}), page: first, written: page - first, partlyWritten: count };
  return err instanceof ProtocolError ? new ProtocolError(err.code, message, details) : Object.assign(new Error(message), { code, details });
}

/** Whether a stream reads a directory: its file descriptor, if it has one (stdin's is 0), says so. */
function streamIsDirectory(stream: Readable): boolean {
  const fd: unknown = (stream as { fd?: unknown }).fd;
  if (typeof fd !== 'number') return false;
  try {
    return fs.fstatSync(fd).isDirectory();
  } catch {
    return false;
  }
}

async function put(ctx: Ctx): Promise<void> {
  const [volumeName, pageText, file] = ctx.args.positionals as [string, string, string];
  const first = parseInteger('PAGE', pageText);
  const handle = file === '-' ? undefined : await fs.promises.open(file, 'r');
  try {
    // A directory opens, and fails at its first read without naming it; on stdin (`put … - <
    // dir`) it reads as empty.
    const source = file === '-' ? 'stdin' : file;
    const stat = handle === undefined ? undefined : await handle.stat();
    if (stat !== undefined ? stat.isDirectory() : streamIsDirectory(ctx.io.stdin)) {
      throw Object.assign(new Error(`${source}: a directory, not a file of pages`), { code: 'EISDIR' });
    }
    const read = handle === undefined ? streamReader(ctx.io.stdin) : fileReader(handle);
    const result = await withClient(ctx, async (client) => {
      const volume = client.volume(volumeName);
      const info = await volume.info();
      checkPageInVolume(first, volumeName, info.pageCount);
      // Only a regular file's size is known in advance: a FIFO or a device (/dev/zero) is read as
      // stdin is, and named as itself when it holds too much.
      const sizeBytes = stat?.isFile() === true ? stat.size : undefined;
      if (sizeBytes !== undefined) {
        const pagesNeeded = Math.ceil(sizeBytes / info.pageSize);
        if (first + pagesNeeded > info.pageCount) {
          throw new ProtocolError(
            'out_of_range',
            `${file} needs ${pagesNeeded} pages from page ${first} but ${volumeName} has ${info.pageCount} pages`,
            { page: first, pages: pagesNeeded, pageCount: info.pageCount },
          );
        }
      }
      let page = first;
      let bytes = 0;
      const lsns = new ShardLsns();
      for (;;) {
        const chunk = await read(TRANSFER_PAGES_PER_CALL * info.pageSize);
        if (chunk.byteLength === 0) break;
        const count = Math.ceil(chunk.byteLength / info.pageSize);
        if (page + count > info.pageCount) {
          // From stdin, a FIFO or a device (a regular file's size was checked above): what came
          // before stays written.
          const done = page === first ? 'nothing was written' : `pages ${first}..${page - 1} were written`;
          throw new ProtocolError('out_of_range', `${source} holds more than the ${info.pageCount - first} pages from page ${first} to the end of ${volumeName}: ${done}`, {
            page: first,
            pageCount: info.pageCount,
            written: page - first,
          });
        }
        const pages = Array.from({ length: count }, (_, i) => {
          const slice = chunk.subarray(i * info.pageSize, (i + 1) * info.pageSize);
          if (slice.byteLength === info.pageSize) return { page: page + i, data: slice };
          const padded = new Uint8Array(info.pageSize);
          padded.set(slice);
          return { page: page + i, data: padded };
        });
        try {
          lsns.add((await volume.writePages(pages)).lsns);
        } catch (err) {
          throw putProgressError(err, first, page, count);
        }
        page += count;
        bytes += chunk.byteLength;
        if (chunk.byteLength < TRANSFER_PAGES_PER_CALL * info.pageSize) break;
      }
      return { volume: volumeName, page: first, pages: page - first, bytes, ...lsns.result() };
    });
    await writeOut(
      ctx.io.stdout,
      ctx.json
        ? jsonText(result)
        : result.pages === 0
          ? `wrote nothing: ${source} is empty\n`
          : `wrote ${result.bytes} bytes to ${volumeName} pages ${first}..${first + result.pages - 1} (${lsnText(result)})\n`,
    );
  } finally {
    await handle?.close();
  }
}

async function get(ctx: Ctx): Promise<void> {
  const [volumeName, pageText, file] = ctx.args.positionals as [string, string, string];
  const first = parseInteger('PAGE', pageText);
  const count = (ctx.args.flags.count as number | undefined) ?? 1;
  const lsnFlag = ctx.args.flags.lsn as string | undefined;
  const readAt = lsnFlag === undefined ? undefined : parseReadAt(lsnFlag);
  const toStdout = file === '-';
  let handle: fs.promises.FileHandle | undefined;
  try {
    const result = await withClient(ctx, async (client) => {
      const volume = client.volume(volumeName);
      const info = await volume.info();
      if (first + count > info.pageCount) {
        throw new ProtocolError(
          'out_of_range',
          // Exact past 2^53 too (a page number near the largest safe integer).
          `pages ${first}..${BigInt(first) + BigInt(count) - 1n} are out of range (${volumeName} has ${info.pageCount} pages)`,
          { page: first, pages: count, pageCount: info.pageCount },
        );
      }
      // Every batch reads a shard at one LSN: the one asked for, else the one its first batch
      // was answered at, so that the pages are the volume as of one point on each shard's log.
      const lsns = new ShardLsns(readAt !== undefined && 'lsns' in readAt ? readAt.lsns : []);
      for (let at = 0; at < count; at += TRANSFER_PAGES_PER_CALL) {
        const n = Math.min(TRANSFER_PAGES_PER_CALL, count - at);
        const pinned = lsns.list();
        const got = await volume.readPages(
          Array.from({ length: n }, (_, i) => first + at + i),
          readAt !== undefined && 'lsn' in readAt ? readAt : pinned.length > 0 ? { lsns: pinned } : {},
        );
        // Opened once the first read is answered, so that a request the cluster refuses (an
        // LSN it does not have, say) does not truncate the file.
        if (!toStdout && handle === undefined) handle = await fs.promises.open(file, 'w');
        lsns.add(got.lsns);
        for (const data of got.pages) {
          if (handle === undefined) await writeOut(ctx.io.stdout, data);
          else await handle.write(data);
        }
      }
      return { volume: volumeName, page: first, pages: count, bytes: count * info.pageSize, ...lsns.result() };
    });
    if (toStdout) return;
    await writeOut(
      ctx.io.stdout,
      ctx.json ? jsonText({ ...result, file }) : `read ${result.bytes} bytes from ${volumeName} pages ${first}..${first + count - 1} into ${file} (${lsnText(result)})\n`,
    );
  } finally {
    await handle?.close();
  }
}

/**
 * `strata nbd`: serves the NBD export until SIGINT or SIGTERM, then stops it (the requests in
 * flight answered) and exits 0.
 */
async function nbd(ctx: Ctx): Promise<void> {
  const { flags, positionals } = ctx.args;
  const volume = positionals[0];
  const listen = typeof flags.listen === 'string' ? parseListen(flags.listen) : { host: '127.0.0.1', port: NBD_PORT_DEFAULT };
  const readOnly = flags['read-only'] === true;
  const connectionsMax = flags['connections-max'] as number | undefined;
  await withClient(ctx, async (client) => {
    const server = await startNbdServer({ client, ...(volume === undefined ? {} : { volume }), host: listen.host, port: listen.port, readOnly, ...(connectionsMax === undefined ? {} : { connectionsMax }) }).catch((err: unknown) => {
      throw listenError(err, listen.host, listen.port);
    });
    const { host, port } = server.address;
    const name = volume ?? 'VOLUME';
    const uri = nbdUri(host, port, name);
    const what = volume === undefined ? 'every volume of the cluster (the export name picks it)' : `volume ${volume}`;
    await writeOut(
      ctx.io.stdout,
      `strata: serving ${what} over NBD${readOnly ? ' (read-only)' : ''}; Ctrl-C stops it\n` +
        `${uri}\n` +
        `  qemu-img info ${uri}\n` +
        `  nbdcopy ${uri} ./copy.img\n` +
        `  qemu-io -f raw -c 'read -v 0 512' ${uri}\n` +
        `  nbd-client -N ${name} ${host} ${port} /dev/nbd0    (as root, after modprobe nbd)\n`,
    );
    const signal = await new Promise<string>((resolve) => {
      const on = (sig: NodeJS.Signals): void => {
        process.off('SIGINT', on);
        process.off('SIGTERM', on);
        resolve(sig);
      };
      process.on('SIGINT', on);
      process.on('SIGTERM', on);
    });
    await writeOut(ctx.io.stderr, `strata: ${signal}: stopping the NBD server\n`);
    await server.stop();
  });
}

/** Why the NBD server could not listen on HOST:PORT, in words (the error keeps its code). */
function listenError(err: unknown, host: string, port: number): unknown {
  const code = (err as NodeJS.ErrnoException).code;
  const where = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  const why: Record<string, string> = {
    EADDRINUSE: `${where} is already in use (another strata nbd?): give another with --listen HOST:PORT (port 0 takes a free one)`,
    EADDRNOTAVAIL: `${where}: no interface of this machine has that address`,
    EACCES: `${where}: not allowed to listen there (a port below 1024 needs privileges)`,
  };
  if (code === undefined || why[code] === undefined) return err;
  return Object.assign(new Error(why[code]), { code });
}

type RunDev = (opts: { demo: boolean; nodes: number; dataDir?: string; metricsPort?: number; auth?: boolean }) => Promise<number>;
type RunNode = (config: NodeConfig) => Promise<{ stop(): Promise<void> }>;

/** Loads a sibling module that may not be built yet. */
function loadModule<T>(name: string, exportName: string): T {
  let mod: Record<string, unknown>;
  try {
    mod = require(name) as Record<string, unknown>;
  } catch (err) {
    throw new ProtocolError('unavailable', `${name} is not available in this build: ${(err as Error).message}`);
  }
  const fn = mod[exportName];
  if (typeof fn !== 'function') throw new ProtocolError('unavailable', `${name} does not export ${exportName}`);
  return fn as T;
}

async function dev(ctx: Ctx): Promise<number> {
  const { flags } = ctx.args;
  const runDev = loadModule<RunDev>('./dev', 'runDev');
  const opts: Parameters<RunDev>[0] = { demo: flags.demo === true, nodes: (flags.nodes as number | undefined) ?? 3 };
  if (flags['data-dir'] !== undefined) opts.dataDir = flags['data-dir'] as string;
  if (flags['metrics-port'] !== undefined) opts.metricsPort = flags['metrics-port'] as number;
  if (flags.auth === true) opts.auth = true;
  return runDev(opts);
}

async function node(ctx: Ctx): Promise<number> {
  const config = loadNodeConfig(ctx.args.rest, ctx.io.env);
  const runNode = loadModule<RunNode>('./node-main', 'runNode');
  await runNode(config);
  await writeOut(ctx.io.stderr, `strata: node ${config.nodeId} of cluster ${config.cluster} running (data in ${config.dataDir}); Ctrl-C stops it\n`);
  // The node runs until SIGINT/SIGTERM, which runNode handles (stop, then exit).
  return new Promise<number>(() => undefined);
}

/**
 * `strata inspect PATH`: a node's data directory (or a device's, or a replica's) read offline
 * (cluster/inspect.ts). Exit code 1 when a replica is damaged or does not open.
 */
async function inspectCommand(ctx: Ctx): Promise<number> {
  const { flags, positionals } = ctx.args;
  const has = (name: string): boolean => flags[name] !== undefined;
  if ((has('from') || has('to') || has('limit')) && flags.records !== true) throw new UsageError('inspect: --from, --to and --limit go with --records');
  if (has('lsn') && !has('page') && flags.catalog !== true) throw new UsageError('inspect: --lsn goes with --page or --catalog');
  if (has('out') && !has('page')) throw new UsageError('inspect: --out goes with --page');
  const { compareReplicas, compareText, inspect, inspectJson, inspectText } = await import('./inspect');
  if (flags.compare === true) {
    for (const name of ['verify', 'records', 'page', 'catalog', 'lsn', 'out', 'from', 'to', 'limit']) {
      if (has(name)) throw new UsageError(`inspect: --${name} does not go with --compare`);
    }
    const compared = compareReplicas(positionals, flags.shard as string | undefined);
    await writeOut(ctx.io.stdout, ctx.json ? jsonText(compared) : compareText(compared));
    if (compared.ok) return 0;
    const bad = compared.others.filter((o) => o.diverged !== undefined || (o.pages?.differing ?? 0) > 0).map((o) => o.path);
    await writeOut(ctx.io.stderr, `strata: corruption: ${bad.length > 0 ? `the replicas under ${bad.join(', ')} differ from the one under ${positionals[0]}` : 'a replica is damaged or does not open'}\n`);
    return 1;
  }
  if (positionals.length > 1) throw new UsageError('inspect: several PATHs go with --compare');
  const report = inspect(positionals[0]!, {
    ...(has('shard') ? { shard: flags.shard as string } : {}),
    ...(flags.verify === true ? { verify: true } : {}),
    ...(flags.records === true
      ? { records: { ...(has('from') ? { fromLsn: flags.from as number } : {}), ...(has('to') ? { toLsn: flags.to as number } : {}), ...(has('limit') ? { limit: flags.limit as number } : {}) } }
      : {}),
    ...(has('page') ? { page: { page: flags.page as number, ...(has('lsn') ? { lsn: flags.lsn as number } : {}) } } : {}),
    ...(flags.catalog === true ? { catalog: has('lsn') ? { lsn: flags.lsn as number } : {} } : {}),
  });
  if (has('out') && report.page !== undefined) await fs.promises.writeFile(flags.out as string, report.page.data);
  await writeOut(ctx.io.stdout, ctx.json ? jsonText(inspectJson(report)) : inspectText(report));
  const bad = report.replicas.filter((r) => r.state === 'damaged' || r.state === 'unreadable');
  if (bad.length === 0) return 0;
  await writeOut(ctx.io.stderr, `strata: corruption: ${bad.length} of ${report.replicas.length} replica(s) damaged or not opening: ${bad.map((r) => `${r.volumeId}/${r.shard}`).join(', ')}\n`);
  return 1;
}

function defaultIo(): CliIo {
  return { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin, env: process.env, connect: connectClient };
}

function errorCode(err: unknown): string {
  const code: unknown = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : 'internal';
}

/** The message of an error, without a leading copy of its code (Node's system errors have one). */
function errorMessage(err: unknown, code: string): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.startsWith(`${code}: `) ? message.slice(code.length + 2) : message;
}

/**
 * Runs the command line `argv` (the arguments after the script) and resolves with the exit code.
 * Never rejects: every failure is printed to `io.stderr` as `strata: <code>: <message>`.
 */
export async function main(argv: readonly string[], io: Partial<CliIo> = {}): Promise<number> {
  const fullIo: CliIo = { ...defaultIo(), ...io };
  let args: ParsedArgs;
  try {
    args = parseArgs(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    await writeOut(fullIo.stderr, `strata: usage: ${err.message}\nRun "strata help" for the commands.\n`);
    return 2;
  }
  const ctx: Ctx = { args, io: fullIo, json: args.flags.json === true };
  try {
    switch (args.command) {
      case 'help':
        await writeOut(fullIo.stdout, HELP_TEXT);
        return 0;
      case 'dev':
        return await dev(ctx);
      case 'node':
        return await node(ctx);
      case 'bench':
        return await loadModule<(argv: readonly string[]) => Promise<number>>('../bench/strata-bench', 'main')(args.rest);
      case 'volume create':
        await volumeCreate(ctx);
        return 0;
      case 'volume branch':
        await volumeBranch(ctx);
        return 0;
      case 'volume list':
        await volumeList(ctx);
        return 0;
      case 'volume info':
        await volumeInfo(ctx);
        return 0;
      case 'volume delete':
        await volumeDelete(ctx);
        return 0;
      case 'volume resize':
        await volumeResize(ctx);
        return 0;
      case 'put':
        await put(ctx);
        return 0;
      case 'get':
        await get(ctx);
        return 0;
      case 'zero':
        await zero(ctx);
        return 0;
      case 'map':
        await map(ctx);
        return 0;
      case 'nbd':
        await nbd(ctx);
        return 0;
      case 'status':
        await status(ctx);
        return 0;
      case 'shard force-vote':
        await shardForceVote(ctx);
        return 0;
      case 'shard move':
        await shardMove(ctx);
        return 0;
      case 'shard handover':
        await shardHandover(ctx);
        return 0;
      case 'shard check':
        return await shardCheck(ctx);
      case 'catalog recover':
        await catalogRecover(ctx);
        return 0;
      case 'drain':
        await drain(ctx);
        return 0;
      case 'rebalance':
        await rebalance(ctx);
        return 0;
      case 'controllers':
        await controllers(ctx);
        return 0;
      case 'inspect':
        return await inspectCommand(ctx);
      case 'nats-auth':
        await writeOut(fullIo.stdout, natsAuthText(clusterOf(args.flags.cluster as string | undefined, fullIo.env), natsAuthClients(args.flags.clients as string | undefined)));
        return 0;
      default:
        throw new UsageError(`unknown command ${JSON.stringify(args.command)}`);
    }
  } catch (err) {
    // The reader of the output went away (`strata get … - | head -c 10`): nothing to say.
    if ((err as NodeJS.ErrnoException).code === 'EPIPE') return 0;
    const code = errorCode(err);
    await writeOut(fullIo.stderr, `strata: ${code}: ${errorMessage(err, code)}\n`).catch(() => undefined);
    return err instanceof UsageError || err instanceof ConfigError ? 2 : 1;
  }
}

if (require.main === module) {
  void main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
