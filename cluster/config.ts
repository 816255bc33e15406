/**
 * Configuration of a Strata node (`strata node`).
 *
 * Sources, lowest to highest precedence: defaults, a JSON config file (`--config path`), the
 * environment, command-line flags. Every value is checked; a bad one is a `ConfigError` whose
 * message names where it came from (`--hosts`, `STRATA_HOSTS`, `node.json: hosts`).
 *
 * | field | flag | environment | file key | default |
 * |---|---|---|---|---|
 * | nodeId | --node-id | STRATA_NODE_ID | nodeId | from the host name, else `n1` |
 * | cluster | --cluster | STRATA_CLUSTER | cluster | `dev` |
 * | natsUrl | --nats | STRATA_NATS_URL | natsUrl | `nats://127.0.0.1:4222` |
 * | natsUser | --nats-user | STRATA_NATS_USER | natsUser | none (the server asks for no user) |
 * | natsPasswordFile | --nats-password-file | STRATA_NATS_PASSWORD_FILE | natsPasswordFile | none; required with natsUser |
 * | natsCaFile | --nats-ca-file | STRATA_NATS_CA_FILE | natsCaFile | none (the system's CAs) |
 * | natsCertFile | --nats-cert-file | STRATA_NATS_CERT_FILE | natsCertFile | none; with natsKeyFile, for a server that verifies clients |
 * | natsKeyFile | --nats-key-file | STRATA_NATS_KEY_FILE | natsKeyFile | none; with natsCertFile |
 * | dataDir | --data-dir | STRATA_DATA_DIR | dataDir | (required) |
 * | hosts | --hosts | STRATA_HOSTS | hosts | cores − 1 (at least 1, at most 64); see `defaultHostsPerNode` |
 * | zone | --zone | STRATA_ZONE | zone | none (the node is a failure domain of its own) |
 * | controller | --controller / --no-controller | | controller | true |
 * | controllers | --controllers | STRATA_CONTROLLERS | controllers | none (one controller node, `controller`) |
 * | newCluster | --new-cluster | | newCluster | false; with controllers only |
 * | metricsPort | --metrics-port | STRATA_METRICS_PORT | metricsPort | 9464 (0 = off) |
 * | traceExporters | --trace-exporters | STRATA_TRACE_EXPORTERS | traceExporters | OTEL_TRACES_EXPORTER, else none |
 * | sampling | --sampling | STRATA_SAMPLING | sampling | OTEL_TRACES_SAMPLER, else ratio |
 * | samplingRatio | --sampling-ratio | STRATA_SAMPLING_RATIO | samplingRatio | OTEL_TRACES_SAMPLER_ARG, else 0.01 |
 * | cacheBytesMaxPerShard | --cache-bytes-max-per-shard | | cacheBytesMaxPerShard | runtime default |
 * | segmentBytesMax | --segment-bytes-max | | segmentBytesMax | runtime default |
 * | checkpointEveryRecords | --checkpoint-every-records | | checkpointEveryRecords | runtime default |
 * | retainRecords | --retain-records | | retainRecords | 0 (the history since the second newest image) |
 * | spaceReserveBytes | --space-reserve-bytes | | spaceReserveBytes | 5 % of each device, at most 1 GiB |
 * | scrubBytesPerSecond | --scrub-bytes-per-second | | scrubBytesPerSecond | 4 MiB (0 = off) |
 * | mailboxRequestsMax | --mailbox-requests-max | | mailboxRequestsMax | runtime default |
 * | mailboxBytesMax | --mailbox-bytes-max | | mailboxBytesMax | runtime default |
 * | hostHeapInitial | --host-heap-initial | | hostHeapInitial | 128 MiB |
 * | repairAfterSeconds | --repair-after-seconds | STRATA_REPAIR_AFTER_SECONDS | repairAfterSeconds | 600 (0 = never) |
 *
 * Trace exporters are a comma list of `otlp` and `console`, or `none`; sampling is `off`,
 * `ratio` or `always` (see docs/observability.md). Byte sizes accept a suffix: `64KiB`, `32MiB`, `1GiB` (or `K`, `M`, `G`; powers of 1024).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { HOSTS_PER_NODE_MAX } from '../messages/control';
import { CONTROLLERS_MAX, CONTROLLERS_MIN } from './catalog-shard';
import { checkNatsTlsFiles, readNatsPassword, type NatsTlsFiles } from './nats-auth';
import { redactNatsUrl } from '../runtime/nats-url';

/**
 * Actor hosts per node when none are configured: the machine's cores less one, shared among the
 * nodes that run on it (at least 1, at most HOSTS_PER_NODE_MAX). Each host is a thread with its
 * own event loop, NATS connection and device queue; the core left over is for the node's main
 * thread, the NATS server and the kernel's IO work. On two cores one host serves more than two
 * (measured with `strata bench`, one node: cached reads at 64 in flight 0.96-1.00x the echo with
 * one host, 0.77-0.91x with two; R=1 writes 0.47-0.51x against 0.39-0.40x, where two hosts also
 * split the group commit into two device queues flushing one disk).
 */
export function defaultHostsPerNode(cores: number, nodes = 1): number {
  const usable = Math.max(1, Math.floor(cores) - 1);
  return Math.max(1, Math.min(HOSTS_PER_NODE_MAX, Math.floor(usable / Math.max(1, nodes))));
}

/** The validated configuration of one node. */
export interface NodeConfig {
  /** This node's id, a subject token: 1..64 characters of [A-Za-z0-9_-]. */
  nodeId: string;
  /** Cluster name: 1..64 characters of [a-z0-9_-]. */
  cluster: string;
  /** NATS server URL(s), comma-separated. */
  natsUrl: string;
  /** The NATS user of the cluster's nodes (cluster/nats-auth.ts), with `natsPasswordFile`. */
  natsUser?: string;
  /** A file holding that user's password (absolute), so that it is in no command line. */
  natsPasswordFile?: string;
  /** The user and the password read from the file, to connect with. */
  natsAuth?: { user: string; pass: string };
  /** The CA of the NATS server's certificate (absolute), when the system does not trust it. */
  natsCaFile?: string;
  /** This node's certificate and key (absolute), for a NATS server that verifies its clients. */
  natsCertFile?: string;
  natsKeyFile?: string;
  /** Those files, checked readable, to connect with. */
  natsTls?: NatsTlsFiles;
  /** The node's data directory (absolute). */
  dataDir: string;
  /** Actor hosts (one device each): 1..64. */
  hosts: number;
  /** The node's failure domain (a rack, a zone): 1..64 characters of [A-Za-z0-9_-]; undefined = a domain of its own. */
  zone?: string;
  /**
   * This node keeps the volume catalog (the controller). Without `controllers`, exactly one node
   * of a cluster should; with them, it is whether this node is one of them.
   */
  controller: boolean;
  /**
   * The controller nodes of a replicated controller (docs/replication.md, "A replicated
   * controller"): 3..7 distinct node ids, the same list on every node of the cluster. The
   * catalog is then a shard replicated on them, and the one whose replica leads it runs the
   * controller. Undefined: one controller node (`controller`), whose catalog is one local copy.
   */
  controllers?: string[];
  /**
   * The cluster is new (`--new-cluster`, with `controllers`): a controller node whose replica of
   * the catalog shard has no storage takes it for a new one once a majority of the controller
   * nodes answer with none either, rather than waiting for all of them (docs/replication.md).
   */
  newCluster?: boolean;
  /** Port of the Prometheus endpoint `/metrics`; 0 = no endpoint. */
  metricsPort: number;
  /** Span exporters (empty: none); undefined = from OTEL_TRACES_EXPORTER. */
  traceExporters?: TraceExporterChoice[];
  /** Trace sampling mode; undefined = from OTEL_TRACES_SAMPLER, else ratio. */
  sampling?: 'off' | 'ratio' | 'always';
  /** Fraction of traces kept with sampling `ratio`, 0..1; undefined = OTEL_TRACES_SAMPLER_ARG, else 0.01. */
  samplingRatio?: number;
  /** Page cache bound per shard, bytes; undefined = the runtime's default. */
  cacheBytesMaxPerShard?: number;
  /** Largest log segment file, bytes; undefined = the runtime's default. */
  segmentBytesMax?: number;
  /** Log records between checkpoints (images); undefined = the runtime's default. */
  checkpointEveryRecords?: number;
  /**
   * Records of history each shard replica keeps readable at least (reads at an LSN, branch
   * points), behind its newest image; undefined = 0 (the history since its second newest image).
   */
  retainRecords?: number;
  spaceReserveBytes?: number;
  /** Background scrub per device, bytes checked per second (0 = off); undefined = the runtime's default. */
  scrubBytesPerSecond?: number;
  /** Bound on queued requests per shard mailbox; undefined = the runtime's default. */
  mailboxRequestsMax?: number;
  /** Bound on queued request bytes per shard mailbox; undefined = the runtime's default. */
  mailboxBytesMax?: number;
  /** Heap a host thread fills before its first full GC, bytes (whole MiB); undefined = 128 MiB. */
  hostHeapInitial?: number;
  /**
   * The controller replaces the replicas of a node silent this long, seconds (0 = never: an
   * operator moves them); undefined = 600. Read by the controller's node only.
   */
  repairAfterSeconds?: number;
}

/** Span exporters a node can be configured with. */
export type TraceExporterChoice = 'otlp' | 'console';

/** A bad configuration value, file or flag. `code` is `bad_config`. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly code = 'bad_config';
}

/** Options of `loadNodeConfig` (for tests; the defaults read the machine). */
export interface LoadNodeConfigOptions {
  /** Default: os.hostname(). */
  hostname?: string;
  /** Default: os.availableParallelism(). */
  availableParallelism?: number;
  /** Directory relative paths (flags, environment) are resolved against. Default: process.cwd(). */
  cwd?: string;
}

/** Default cluster name. */
export const CLUSTER_DEFAULT = 'dev';
/** Default NATS URL. */
export const NATS_URL_DEFAULT = 'nats://127.0.0.1:4222';
/** Default metrics port. */
export const METRICS_PORT_DEFAULT = 9464;
/** Bound on a config file, bytes. */
export const CONFIG_FILE_BYTES_MAX = 1024 * 1024;

const KIB = 1024;
const MIB = 1024 * KIB;
const GIB = 1024 * MIB;

const NODE_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
const CLUSTER_PATTERN = /^[a-z0-9_-]{1,64}$/;
/** Why `name` cannot be a cluster's name (a node's `--cluster`), or undefined when it can. */
export function clusterNameProblem(name: string): string | undefined {
  return CLUSTER_PATTERN.test(name) ? undefined : `expected 1..64 characters of [a-z0-9_-], got ${JSON.stringify(name)}`;
}
const NATS_USER_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;
const NATS_USER_EXPECTED = 'expected 1..64 characters of [A-Za-z0-9_.-]';
/** Why `name` cannot be the NATS user a node or a client connects as (`--nats-user`), or undefined when it can. */
export function natsUserProblem(name: string): string | undefined {
  return NATS_USER_PATTERN.test(name) ? undefined : `${NATS_USER_EXPECTED}, got ${JSON.stringify(name)}`;
}
const NATS_SCHEMES = ['nats:', 'tls:', 'ws:', 'wss:'];
const DECIMAL_PATTERN = /^(0|[1-9][0-9]*)$/;
const SIZE_PATTERN = /^(0|[1-9][0-9]*)\s*(k|kib|m|mib|g|gib)?$/i;
const SIZE_UNITS: Record<string, number> = { '': 1, k: KIB, kib: KIB, m: MIB, mib: MIB, g: GIB, gib: GIB };
const FRACTION_PATTERN = /^(0|1|0?\.[0-9]{1,12}|1\.0*)$/;

/** `controllers` (also `strata controllers IDS`): a comma list of CONTROLLERS_MIN..CONTROLLERS_MAX distinct node ids. */
export function checkControllersList(value: string): string | undefined {
  const list = value.split(',').map((x) => x.trim());
  const badId = list.find((id) => !NODE_ID_PATTERN.test(id));
  if (badId !== undefined) return `${JSON.stringify(badId)} is not a node id (1..64 characters of [A-Za-z0-9_-])`;
  if (new Set(list).size !== list.length) return 'a node id is listed twice';
  if (list.length < CONTROLLERS_MIN || list.length > CONTROLLERS_MAX) {
    return `expected ${CONTROLLERS_MIN}..${CONTROLLERS_MAX} node ids, got ${list.length} (a single controller node is --controller)`;
  }
  return undefined;
}

function checkTraceExporters(value: string): string | undefined {
  const names = value.split(',').map((x) => x.trim());
  if (names.length === 1 && names[0] === 'none') return undefined;
  return names.every((n) => n === 'otlp' || n === 'console') ? undefined : 'expected a comma list of otlp and console, or none';
}

type Kind = 'string' | 'integer' | 'bytes' | 'boolean' | 'fraction';

interface FieldSpec {
  key: keyof NodeConfig;
  flag: string;
  env?: string;
  kind: Kind;
  min?: number;
  max?: number;
  /** Extra check of a string; returns an error message or undefined. */
  check?: (value: string) => string | undefined;
  /** A path, resolved against a base directory. */
  isPath?: boolean;
  /** How a bad value is shown in the error (a NATS URL without its user info). */
  shown?: (value: string) => string;
}

/**
 * What is wrong with a list of NATS URLs, or undefined (the caller adds the value it got, shown
 * with `redactNatsUrl`). A URL with user info (`nats://user:password@host`, `nats://token@host`)
 * is refused: the NATS client does not use it, so the server would refuse the connection.
 */
export function checkNatsUrl(value: string): string | undefined {
  if (value.includes('@')) {
    return 'a user, password or token in the URL is not used to connect: give the user with --nats-user and its password in a file with --nats-password-file';
  }
  for (const url of value.split(',')) {
    const u = url.trim();
    if (u === '') return 'expected one or more NATS URLs separated by commas';
    if (!u.includes('://')) continue; // host:port, as the NATS client accepts
    let parsed: URL;
    try {
      parsed = new URL(u);
    } catch {
      return 'not a valid URL';
    }
    if (!NATS_SCHEMES.includes(parsed.protocol)) {
      return `expected ${NATS_SCHEMES.map((s) => s.slice(0, -1)).join('|')} URLs`;
    }
  }
  return undefined;
}

/** What is wrong with NATS URLs `value` given as `source` (`--nats`), the value shown without its user info; undefined when nothing is. */
export function natsUrlError(source: string, value: string): string | undefined {
  const problem = checkNatsUrl(value);
  return problem === undefined ? undefined : `${source}: ${problem}, got ${JSON.stringify(redactNatsUrl(value))}`;
}

/** Every configurable field, with its flag, environment variable, type and bounds. */
const FIELDS: readonly FieldSpec[] = [
  {
    key: 'nodeId',
    flag: '--node-id',
    env: 'STRATA_NODE_ID',
    kind: 'string',
    check: (v) => (NODE_ID_PATTERN.test(v) ? undefined : 'expected 1..64 characters of [A-Za-z0-9_-]'),
  },
  {
    key: 'cluster',
    flag: '--cluster',
    env: 'STRATA_CLUSTER',
    kind: 'string',
    check: (v) => (CLUSTER_PATTERN.test(v) ? undefined : 'expected 1..64 characters of [a-z0-9_-]'),
  },
  { key: 'natsUrl', flag: '--nats', env: 'STRATA_NATS_URL', kind: 'string', check: checkNatsUrl, shown: redactNatsUrl },
  {
    key: 'natsUser',
    flag: '--nats-user',
    env: 'STRATA_NATS_USER',
    kind: 'string',
    check: (v) => (NATS_USER_PATTERN.test(v) ? undefined : NATS_USER_EXPECTED),
  },
  {
    key: 'natsCaFile',
    flag: '--nats-ca-file',
    env: 'STRATA_NATS_CA_FILE',
    kind: 'string',
    isPath: true,
    check: (v) => (v.includes('\0') ? 'a path may not contain a NUL character' : undefined),
  },
  {
    key: 'natsCertFile',
    flag: '--nats-cert-file',
    env: 'STRATA_NATS_CERT_FILE',
    kind: 'string',
    isPath: true,
    check: (v) => (v.includes('\0') ? 'a path may not contain a NUL character' : undefined),
  },
  {
    key: 'natsKeyFile',
    flag: '--nats-key-file',
    env: 'STRATA_NATS_KEY_FILE',
    kind: 'string',
    isPath: true,
    check: (v) => (v.includes('\0') ? 'a path may not contain a NUL character' : undefined),
  },
  {
    key: 'natsPasswordFile',
    flag: '--nats-password-file',
    env: 'STRATA_NATS_PASSWORD_FILE',
    kind: 'string',
    isPath: true,
    check: (v) => (v.includes('\0') ? 'a path may not contain a NUL character' : undefined),
  },
  {
    key: 'dataDir',
    flag: '--data-dir',
    env: 'STRATA_DATA_DIR',
    kind: 'string',
    isPath: true,
    check: (v) => (v.includes('\0') ? 'a path may not contain a NUL character' : undefined),
  },
  { key: 'hosts', flag: '--hosts', env: 'STRATA_HOSTS', kind: 'integer', min: 1, max: HOSTS_PER_NODE_MAX },
  { key: 'zone', flag: '--zone', env: 'STRATA_ZONE', kind: 'string', check: (v) => (NODE_ID_PATTERN.test(v) ? undefined : 'expected 1..64 characters of [A-Za-z0-9_-]') },
  { key: 'controller', flag: '--controller', kind: 'boolean' },
  { key: 'controllers', flag: '--controllers', env: 'STRATA_CONTROLLERS', kind: 'string', check: checkControllersList },
  { key: 'newCluster', flag: '--new-cluster', kind: 'boolean' },
  { key: 'metricsPort', flag: '--metrics-port', env: 'STRATA_METRICS_PORT', kind: 'integer', min: 0, max: 65535 },
  { key: 'traceExporters', flag: '--trace-exporters', env: 'STRATA_TRACE_EXPORTERS', kind: 'string', check: checkTraceExporters },
  {
    key: 'sampling',
    flag: '--sampling',
    env: 'STRATA_SAMPLING',
    kind: 'string',
    check: (v) => (v === 'off' || v === 'ratio' || v === 'always' ? undefined : 'expected off, ratio or always'),
  },
  { key: 'samplingRatio', flag: '--sampling-ratio', env: 'STRATA_SAMPLING_RATIO', kind: 'fraction' },
  { key: 'cacheBytesMaxPerShard', flag: '--cache-bytes-max-per-shard', kind: 'bytes', min: MIB, max: 1024 * GIB },
  { key: 'segmentBytesMax', flag: '--segment-bytes-max', kind: 'bytes', min: 4 * KIB, max: GIB },
  { key: 'checkpointEveryRecords', flag: '--checkpoint-every-records', kind: 'integer', min: 1, max: 1_000_000_000 },
  { key: 'retainRecords', flag: '--retain-records', kind: 'integer', min: 0, max: 1_000_000_000 },
  { key: 'spaceReserveBytes', flag: '--space-reserve-bytes', kind: 'bytes', min: 0, max: 1024 * GIB },
  { key: 'scrubBytesPerSecond', flag: '--scrub-bytes-per-second', kind: 'bytes', min: 0, max: 64 * GIB },
  { key: 'mailboxRequestsMax', flag: '--mailbox-requests-max', kind: 'integer', min: 1, max: 1_000_000 },
  { key: 'mailboxBytesMax', flag: '--mailbox-bytes-max', kind: 'bytes', min: MIB, max: 64 * GIB },
  {
    key: 'hostHeapInitial',
    flag: '--host-heap-initial',
    kind: 'bytes',
    min: 16 * MIB,
    max: 64 * GIB,
    check: (v) => (Number(v) % MIB === 0 ? undefined : 'expected whole MiB'),
  },
  { key: 'repairAfterSeconds', flag: '--repair-after-seconds', env: 'STRATA_REPAIR_AFTER_SECONDS', kind: 'integer', min: 0, max: 7 * 24 * 3600 },
];

/** The flags `strata node` accepts (besides `--config`). */
export const NODE_FLAGS: readonly string[] = ['--config', ...FIELDS.map((f) => f.flag), '--no-controller', '--nats-url'];

type Raw = Partial<Record<keyof NodeConfig, string | number | boolean>>;

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value);
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  return String(value);
}

function bad(source: string, message: string): never {
  throw new ConfigError(`${source}: ${message}`);
}

function rangeText(spec: FieldSpec): string {
  return `${spec.min ?? 0}..${spec.max ?? Number.MAX_SAFE_INTEGER}`;
}

/**
 * Converts one raw value to its typed value: a string from flags and the environment; a JSON
 * value from a file, where integers must be JSON numbers and booleans JSON booleans (sizes may
 * be numbers or strings with a suffix).
 */
function convert(spec: FieldSpec, value: unknown, source: string, baseDir: string, fromFile = false): string | number | boolean {
  if (fromFile && spec.kind === 'fraction' && typeof value !== 'number') {
    bad(source, `expected a number in 0..1 (a JSON number), got ${describe(value)}`);
  }
  if (fromFile && spec.kind === 'integer' && typeof value !== 'number') {
    bad(source, `expected an integer in ${rangeText(spec)} (a JSON number), got ${describe(value)}`);
  }
  if (fromFile && spec.kind === 'boolean' && typeof value !== 'boolean') {
    bad(source, `expected true or false (a JSON boolean), got ${describe(value)}`);
  }
  switch (spec.kind) {
    case 'string': {
      if (typeof value !== 'string') bad(source, `expected a string, got ${describe(value)}`);
      if (value === '') bad(source, 'expected a non-empty value');
      const problem = spec.check?.(value);
      if (problem !== undefined) bad(source, `${problem}, got ${describe(spec.shown?.(value) ?? value)}`);
      return spec.isPath === true ? path.resolve(baseDir, value) : value;
    }
    case 'boolean': {
      if (typeof value === 'boolean') return value;
      if (value === 'true' || value === '1' || value === 'yes') return true;
      if (value === 'false' || value === '0' || value === 'no') return false;
      bad(source, `expected true or false, got ${describe(value)}`);
    }
    case 'fraction': {
      const n = typeof value === 'number' ? value : typeof value === 'string' && FRACTION_PATTERN.test(value.trim()) ? Number(value.trim()) : NaN;
      if (!Number.isFinite(n) || n < 0 || n > 1) bad(source, `expected a number in 0..1, got ${describe(value)}`);
      return n;
    }
    case 'integer':
    case 'bytes': {
      let n: number;
      if (typeof value === 'number') {
        n = value;
      } else if (typeof value === 'string') {
        const text = value.trim();
        if (spec.kind === 'bytes') {
          const m = SIZE_PATTERN.exec(text);
          n = m === null ? NaN : Number(m[1]) * SIZE_UNITS[(m[2] ?? '').toLowerCase()]!;
        } else {
          n = DECIMAL_PATTERN.test(text) && text.length <= 16 ? Number(text) : NaN;
        }
      } else {
        n = NaN;
      }
      const what = spec.kind === 'bytes' ? `a size in bytes in ${rangeText(spec)} (suffixes KiB, MiB, GiB allowed)` : `an integer in ${rangeText(spec)}`;
      if (!Number.isSafeInteger(n)) bad(source, `expected ${what}, got ${describe(value)}`);
      if (n < (spec.min ?? 0) || n > (spec.max ?? Number.MAX_SAFE_INTEGER)) bad(source, `expected ${what}, got ${describe(value)}`);
      const problem = spec.check?.(String(n));
      if (problem !== undefined) bad(source, `${problem}, got ${describe(value)}`);
      return n;
    }
  }
}

function specOfFlag(flag: string): FieldSpec | undefined {
  if (flag === '--nats-url') return FIELDS.find((f) => f.key === 'natsUrl');
  return FIELDS.find((f) => f.flag === flag);
}

/** Parses node flags: `--flag value`, `--flag=value`, `--controller`, `--no-controller`. */
function parseFlags(argv: readonly string[], cwd: string): { raw: Raw; configPath?: string } {
  const raw: Raw = {};
  let configPath: string | undefined;
  // The flag that gave each setting: one given twice (or --controller with --no-controller) is
  // refused, not taken as its last value (which a data directory's stamp would then keep).
  const given = new Map<string, string>();
  const once = (key: string, flag: string): void => {
    const before = given.get(key);
    if (before !== undefined) bad(flag, before === flag ? 'given twice' : `given with ${before}: give one`);
    given.set(key, flag);
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--')) bad(arg, 'unexpected argument (strata node takes only flags)');
    const eq = arg.indexOf('=');
    const flag = eq < 0 ? arg : arg.slice(0, eq);
    const inline = eq < 0 ? undefined : arg.slice(eq + 1);
    if (flag === '--no-controller') {
      if (inline !== undefined) bad(flag, 'takes no value');
      once('controller', flag);
      raw.controller = false;
      continue;
    }
    const spec = flag === '--config' ? undefined : specOfFlag(flag);
    if (flag !== '--config' && spec === undefined) bad(flag, `unknown flag (allowed: ${NODE_FLAGS.join(', ')})`);
    let value: string;
    if (inline !== undefined) {
      value = inline;
    } else if (spec?.kind === 'boolean') {
      value = 'true';
    } else {
      const next = argv[i + 1];
      if (next === undefined || next.startsWith('--')) bad(flag, 'expected a value');
      value = next;
      i++;
    }
    if (spec === undefined) {
      if (value === '') bad('--config', 'expected a file path');
      once('--config', flag);
      configPath = path.resolve(cwd, value);
    } else {
      const converted = convert(spec, value, flag, cwd);
      once(spec.key, flag);
      raw[spec.key] = converted;
    }
  }
  return configPath === undefined ? { raw } : { raw, configPath };
}

function readConfigFile(file: string): Raw {
  const name = path.basename(file);
  let text: string;
  try {
    const stat = fs.statSync(file);
    if (!stat.isFile()) bad(`--config ${file}`, 'not a regular file');
    if (stat.size > CONFIG_FILE_BYTES_MAX) bad(`--config ${file}`, `larger than ${CONFIG_FILE_BYTES_MAX} bytes`);
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    bad(`--config ${file}`, `can not read: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    bad(name, `invalid JSON: ${(err as Error).message}`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) bad(name, `expected a JSON object, got ${describe(json)}`);
  const raw: Raw = {};
  const baseDir = path.dirname(file);
  for (const [key, value] of Object.entries(json as Record<string, unknown>)) {
    const spec = FIELDS.find((f) => f.key === key);
    if (spec === undefined) bad(`${name}: ${key}`, `unknown key (allowed: ${FIELDS.map((f) => f.key).join(', ')})`);
    raw[spec.key] = convert(spec, value, `${name}: ${key}`, baseDir, true);
  }
  return raw;
}

function readEnv(env: Readonly<Record<string, string | undefined>>, cwd: string): Raw {
  const raw: Raw = {};
  for (const spec of FIELDS) {
    if (spec.env === undefined) continue;
    const value = env[spec.env];
    if (value === undefined || value === '') continue;
    raw[spec.key] = convert(spec, value, spec.env, cwd);
  }
  return raw;
}

/** A node id from a host name: lowercase, other characters as '-', at most 64; 'n1' if nothing is left. */
export function nodeIdFromHostname(hostname: string): string {
  const id = hostname
    .toLowerCase()
    .split('.')[0]!
    .replace(/[^a-z0-9_-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 64);
  return id === '' ? 'n1' : id;
}

/**
 * The configuration of a node from `argv` (the arguments after `strata node`) and `env`:
 * defaults < `--config` file < environment < flags. Throws ConfigError naming the flag,
 * environment variable or file key of the first bad value, or `dataDir` when none is given.
 */
export function loadNodeConfig(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
  options: LoadNodeConfigOptions = {},
): NodeConfig {
  const cwd = options.cwd ?? process.cwd();
  const flags = parseFlags(argv, cwd);
  const file = flags.configPath === undefined ? {} : readConfigFile(flags.configPath);
  const fromEnv = readEnv(env, cwd);
  const merged: Raw = { ...file, ...fromEnv, ...flags.raw };

  if (merged.dataDir === undefined) {
    bad('dataDir', 'required: pass --data-dir, set STRATA_DATA_DIR or put dataDir in the config file');
  }
  const parallelism = options.availableParallelism ?? os.availableParallelism();
  const config: NodeConfig = {
    nodeId: (merged.nodeId as string | undefined) ?? nodeIdFromHostname(options.hostname ?? os.hostname()),
    cluster: (merged.cluster as string | undefined) ?? CLUSTER_DEFAULT,
    natsUrl: (merged.natsUrl as string | undefined) ?? NATS_URL_DEFAULT,
    dataDir: merged.dataDir as string,
    hosts: (merged.hosts as number | undefined) ?? defaultHostsPerNode(parallelism),
    controller: (merged.controller as boolean | undefined) ?? true,
    metricsPort: (merged.metricsPort as number | undefined) ?? METRICS_PORT_DEFAULT,
  };
  const natsUser = merged.natsUser as string | undefined;
  const natsPasswordFile = merged.natsPasswordFile as string | undefined;
  const tlsFiles: NatsTlsFiles = {};
  for (const [key, field] of [['caFile', 'natsCaFile'], ['certFile', 'natsCertFile'], ['keyFile', 'natsKeyFile']] as const) {
    const file = merged[field] as string | undefined;
    if (file === undefined) continue;
    tlsFiles[key] = file;
    config[field] = file;
  }
  if (Object.keys(tlsFiles).length > 0) {
    try {
      config.natsTls = checkNatsTlsFiles(tlsFiles, { caFile: 'natsCaFile (--nats-ca-file)', certFile: 'natsCertFile (--nats-cert-file)', keyFile: 'natsKeyFile (--nats-key-file)' });
    } catch (e) {
      throw new ConfigError((e as Error).message);
    }
  }
  if (natsUser !== undefined || natsPasswordFile !== undefined) {
    if (natsPasswordFile === undefined) bad('natsUser', 'needs a password: pass --nats-password-file, set STRATA_NATS_PASSWORD_FILE or put natsPasswordFile in the config file');
    if (natsUser === undefined) bad('natsPasswordFile', 'needs a user: pass --nats-user, set STRATA_NATS_USER or put natsUser in the config file');
    try {
      Object.assign(config, { natsUser, natsPasswordFile, natsAuth: { user: natsUser, pass: readNatsPassword(natsPasswordFile) } });
    } catch (e) {
      bad('natsPasswordFile', (e as Error).message);
    }
  }
  if (merged.traceExporters !== undefined) {
    const list = (merged.traceExporters as string).split(',').map((x) => x.trim());
    config.traceExporters = list.length === 1 && list[0] === 'none' ? [] : ([...new Set(list)] as TraceExporterChoice[]);
  }
  if (merged.zone !== undefined) config.zone = merged.zone as string;
  if (merged.controllers !== undefined) {
    const list = (merged.controllers as string).split(',').map((x) => x.trim());
    const member = list.includes(config.nodeId);
    if (merged.controller !== undefined && merged.controller !== member) {
      bad('controller', `${member ? '--no-controller' : '--controller'} contradicts controllers (${list.join(',')}), which ${member ? 'list' : 'do not list'} node '${config.nodeId}': with controllers, leave it out`);
    }
    config.controllers = list;
    config.controller = member;
  }
  if (merged.newCluster === true) {
    if (config.controllers === undefined) bad('--new-cluster', 'needs --controllers: it is for a replicated controller (a single controller node starts its catalog alone)');
    config.newCluster = true;
  }
  if (merged.sampling !== undefined) config.sampling = merged.sampling as NodeConfig['sampling'];
  if (merged.samplingRatio !== undefined) config.samplingRatio = merged.samplingRatio as number;
  for (const key of [
    'cacheBytesMaxPerShard',
    'segmentBytesMax',
    'checkpointEveryRecords',
    'retainRecords',
    'spaceReserveBytes',
    'scrubBytesPerSecond',
    'mailboxRequestsMax',
    'mailboxBytesMax',
    'hostHeapInitial',
    'repairAfterSeconds',
  ] as const) {
    const value = merged[key];
    if (value !== undefined) config[key] = value as number;
  }
  return config;
}
