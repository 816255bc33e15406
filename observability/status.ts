/**
 * A terminal view of the cluster `status` reply (`ApiRouter.clusterStatus`): nodes with their
 * health (a node whose heartbeat stopped is DEAD), volumes, per shard its leader, term,
 * commit/applied LSN, replicas up, largest replica lag and health, and per replica its node,
 * role, state, LSNs and lag; a replica nobody reports (its node is dead or did not answer) is
 * shown `missing`. The JSON mode of `strata status` is the reply itself (`formatStatusJson`).
 *
 * The reply is read tolerantly, as the protocol asks: fields may be missing or of another type
 * (a newer or older node); what is unknown shows as `-`. Everything printed is bounded (rows per
 * table, characters per cell) and stripped of control characters, since names come from the
 * network.
 */

/** Rows one table prints at most; the rest is summarized in one line. */
export const STATUS_ROWS_MAX = 512;
/** Characters one cell prints at most. */
export const STATUS_CELL_CHARS_MAX = 48;

/** Options of `formatStatus`. */
export interface FormatStatusOptions {
  /** ANSI colors (red for dead or down, yellow for degraded); default false. */
  color?: boolean;
  /** Clock for "last seen … ago", ms since the Unix epoch; default Date.now(). */
  nowMs?: number;
}

type Rec = Record<string, unknown>;

function rec(v: unknown): Rec | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Rec) : undefined;
}

function arr(v: unknown): Rec[] {
  return Array.isArray(v) ? v.map(rec).filter((x): x is Rec => x !== undefined) : [];
}

function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/** Printable text of a value: control characters replaced, length bounded. */
function cell(v: unknown): string {
  let s: string;
  if (v === undefined || v === null || v === '') s = '-';
  else if (typeof v === 'string') s = v;
  else if (typeof v === 'number' || typeof v === 'boolean') s = String(v);
  else s = '?';
  // eslint-disable-next-line no-control-regex
  s = s.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
  return s.length > STATUS_CELL_CHARS_MAX ? `${s.slice(0, STATUS_CELL_CHARS_MAX - 1)}…` : s;
}

/** Bytes as a short text: `512 B`, `3.4 MiB`, `41.2 GiB`, `1.1 TiB`. */
export function bytesText(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(1)} ${units[u]}`;
}

function duration(ms: number | undefined): string {
  if (ms === undefined || ms < 0) return '-';
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${(ms / 1000).toFixed(1)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d${String(h % 24).padStart(2, '0')}h`;
}

const ANSI = { red: '\u001b[31m', yellow: '\u001b[33m', bold: '\u001b[1m', reset: '\u001b[0m' } as const;

type Tone = 'bad' | 'warn' | undefined;

interface Table {
  header: string[];
  rows: Array<{ cells: string[]; tone: Tone }>;
}

function renderTable(t: Table, indent: string, color: boolean): string[] {
  const shown = t.rows.slice(0, STATUS_ROWS_MAX);
  const widths = t.header.map((h, i) => Math.max(h.length, ...shown.map((r) => (r.cells[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd();
  const out = [indent + line(t.header)];
  for (const r of shown) {
    const text = indent + line(r.cells);
    out.push(color && r.tone ? `${r.tone === 'bad' ? ANSI.red : ANSI.yellow}${text}${ANSI.reset}` : text);
  }
  if (t.rows.length > shown.length) out.push(`${indent}… ${t.rows.length - shown.length} more`);
  return out;
}

interface NodeRow {
  id: string;
  state: 'up' | 'degraded' | 'dead' | 'no reply';
  reason: string | undefined;
  hostsOk: number | undefined;
  hosts: number | undefined;
  /** The worst of its hosts' event-loop delays over their last 10 s (hosts[].loopDelayMaxMs). */
  loopDelayMaxMs: number | undefined;
  uptimeMs: number | undefined;
  version: string | undefined;
  controller: boolean | undefined;
  lastSeenMs: number | undefined;
  /** How long the controller had not heard from it when it answered (its own clock). */
  silentMs: number | undefined;
  /** A dead node holding replicas: time until the controller replaces them (0: it does now); undefined when repairs are off. */
  repairInMs: number | undefined;
  /** An operator marked it draining (strata drain): its replicas are moved off. */
  draining: boolean;
  /** A live node's replicas it reports down, and the time until the controller replaces the first (0: it does now; undefined: repairs off). */
  replicasDown: number | undefined;
  replicasDownRepairInMs: number | undefined;
  /** Its failure domain (strata node --zone), as the controller knows it. */
  zone: string | undefined;
  /** Of its devices, the one with the least free space (hosts[].queue.space), and the hosts short of space. */
  space: { freeBytes: number; sizeBytes: number } | undefined;
  short: string[];
}

/** A live node's replicas it reports down, as the controller knows them: how many, and when they are replaced. */
function replicasDownText(n: NodeRow): string | undefined {
  if (n.replicasDown === undefined || n.replicasDown === 0) return undefined;
  const what = `${n.replicasDown} replica${n.replicasDown === 1 ? '' : 's'} down`;
  if (n.replicasDownRepairInMs === undefined) return what;
  return n.replicasDownRepairInMs > 0 ? `${what}, replaced in ${duration(n.replicasDownRepairInMs)}` : `${what}, replacing`;
}

/** Nodes: the controller's members (with liveness) merged with the nodes that answered. */
function nodeRows(reply: Rec): NodeRow[] {
  const byId = new Map<string, NodeRow>();
  const row = (id: string): NodeRow => {
    let r = byId.get(id);
    if (!r) {
      r = { id, state: 'no reply', reason: undefined, hostsOk: undefined, hosts: undefined, loopDelayMaxMs: undefined, uptimeMs: undefined, version: undefined, controller: undefined, lastSeenMs: undefined, silentMs: undefined, repairInMs: undefined, draining: false, replicasDown: undefined, replicasDownRepairInMs: undefined, zone: undefined, space: undefined, short: [] };
      byId.set(id, r);
    }
    return r;
  };
  for (const m of arr(reply.members)) {
    const id = str(m.nodeId);
    if (id === undefined) continue;
    const r = row(id);
    r.lastSeenMs = num(m.lastSeenMs);
    r.silentMs = num(m.silentMs);
    r.repairInMs = num(m.repairInMs);
    r.draining = m.draining === true;
    r.replicasDown = num(m.replicasDown);
    r.replicasDownRepairInMs = num(m.replicasDownRepairInMs);
    r.zone = str(m.zone);
    r.hosts = num(m.hosts);
    if (m.live === false) r.state = 'dead';
  }
  for (const n of arr(reply.nodes)) {
    const info = rec(n.node);
    const id = str(info?.id);
    if (info === undefined || id === undefined) continue;
    const r = row(id);
    const hosts = arr(n.hosts);
    r.hosts = hosts.length > 0 ? hosts.length : r.hosts;
    r.hostsOk = hosts.filter((h) => h.ok === true).length;
    const delays = hosts.map((h) => num(h.loopDelayMaxMs)).filter((d): d is number => d !== undefined);
    r.loopDelayMaxMs = delays.length > 0 ? Math.max(...delays) : undefined;
    r.uptimeMs = num(info.uptimeMs);
    r.version = str(info.version);
    r.controller = typeof info.controller === 'boolean' ? info.controller : undefined;
    for (const h of hosts) {
      const space = rec(rec(h.queue)?.space);
      const free = num(space?.freeBytes);
      const size = num(space?.sizeBytes);
      const reserve = num(space?.reserveBytes);
      if (free === undefined || size === undefined || size <= 0) continue;
      if (r.space === undefined || free / size < r.space.freeBytes / r.space.sizeBytes) r.space = { freeBytes: free, sizeBytes: size };
      if (reserve !== undefined && free < reserve) r.short.push(`host ${cell(h.hostId)}: writes refused, ${bytesText(free)} free`);
    }
    // A node that answers is alive, whatever the controller last heard.
    const bad = hosts.filter((h) => h.ok !== true);
    // A node of many shards answers in parts: some that did not arrive leave shards unreported.
    const partsMissing = num(n.partsMissing);
    const missing = partsMissing !== undefined && partsMissing > 0 ? `${partsMissing} answer part(s) lost: shards unreported` : undefined;
    if (info.healthy === false || bad.length > 0 || missing !== undefined || r.short.length > 0) {
      r.state = 'degraded';
      r.reason = [...bad.map((h) => `host ${cell(h.hostId)}: ${cell(h.reason ?? 'not ok')}`), ...r.short, ...(missing !== undefined ? [missing] : [])].join('; ') || 'unhealthy';
    } else {
      r.state = 'up';
    }
  }
  return [...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** One replica of a shard as the view shows it. */
interface ReplicaRow {
  node: string;
  role: string | undefined;
  state: string;
  term: number | undefined;
  commitLsn: number | undefined;
  appliedLsn: number | undefined;
  lag: number | undefined;
  /** Bytes of its log and images on its node's device, as it reports them (`storage`). */
  stored: number | undefined;
  note: string | undefined;
  tone: Tone;
}

/** A replica's bytes on its device (log and images), from its `storage`; undefined when not reported. */
function storedBytes(r: Rec): number | undefined {
  const st = rec(r.storage);
  const log = num(st?.logBytes);
  const images = num(st?.imageBytes);
  return log === undefined || images === undefined || log < 0 || images < 0 ? undefined : log + images;
}

/**
 * The replicas of a shard: those some node reported (`replicas`), and the followers the leader
 * knows of (`lag`, by node), or the members of a shard without a leader (`members`), that
 * nobody reported, as `missing`. An older reply's lag list
 * (`replicas: [{replica, lagRecords}]`) only contributes lags.
 */
function replicaRows(s: Rec, dead: ReadonlySet<string>, expected: number | undefined): ReplicaRow[] {
  // A healthy shard of a reply with less detail: its replicas are counted, not listed.
  if (s.replicas === undefined && num(s.replicaCount) !== undefined) return [];
  const lagMap: Rec = { ...(rec(s.lag) ?? {}) };
  const lagOf = (node: string): number | undefined => num(lagMap[node]);
  const rows: ReplicaRow[] = [];
  const seen = new Set<string>();
  for (const r of arr(s.replicas)) {
    const node = str(r.node);
    if (node === undefined) {
      // An older reply: a lag entry only.
      const id = str(r.replica);
      const lag = num(r.lagRecords);
      if (id !== undefined && lag !== undefined && lagOf(id) === undefined) lagMap[id] = lag;
      continue;
    }
    if (seen.has(node)) continue;
    seen.add(node);
    const reported = str(r.state) ?? '-';
    const down = reported !== 'up' && reported !== '-';
    // A replica whose log lost records votes for no one until it has them again.
    const repairing = r.repairing === true;
    const awaiting = (Array.isArray(r.awaitingTerms) ? (r.awaitingTerms as unknown[]) : []).filter((x): x is string => typeof x === 'string' && x !== '').slice(0, 8).map(cell);
    // The only copy of its shard: no peer can repair it.
    const sole = expected === 1 && strings(s.priorMembers).length === 0;
    const repairNote = awaiting.length > 0
      ? `storage lost: no vote before the term${awaiting.length === 1 ? '' : 's'} of ${awaiting.join(', ')}`
      : sole
      ? 'the only copy lost records: waits for force-vote'
      : 'lost records or storage: no vote until repaired';
    // A replica the leader's set does not hold (any more): a move took it off, and its node destroys it.
    const members = strings(s.members);
    const outside = members.length > 0 && !members.includes(node) && !strings(s.priorMembers).includes(node);
    rows.push({
      node, role: str(r.role), state: repairing && !down ? 'repairing' : reported, term: num(r.term), commitLsn: num(r.commitLsn), appliedLsn: num(r.appliedLsn),
      lag: lagOf(node), stored: storedBytes(r), note: repairing ? repairNote : outside ? 'not a member: moved off (destroyed soon)' : str(r.reason), tone: down ? 'bad' : repairing || outside ? 'warn' : undefined,
    });
  }
  // The followers the leader knows of, and the members of a shard without a leader (the
  // catalog shard's, whose members every replica reports) that nobody reported.
  for (const node of [...Object.keys(lagMap), ...(s.leader === undefined ? strings(s.members) : [])]) {
    if (seen.has(node)) continue;
    seen.add(node);
    rows.push({
      node, role: undefined, state: 'missing', term: undefined, commitLsn: undefined, appliedLsn: undefined, lag: lagOf(node), stored: undefined,
      note: dead.has(node) ? 'node DEAD' : 'not reported', tone: 'bad',
    });
  }
  return rows.sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
}

/** The strings of a list (node ids), none when it is not one. */
function strings(v: unknown): string[] {
  return Array.isArray(v) ? (v as unknown[]).filter((x): x is string => typeof x === 'string').map(cell) : [];
}

function shardLag(s: Rec, replicas: readonly ReplicaRow[]): string {
  const lag = num(s.replicaLag);
  if (lag !== undefined) return String(lag);
  // Replicas counted, not listed: the leader's lag by follower.
  const lags = (replicas.length > 0 ? replicas.map((r) => r.lag) : Object.values(rec(s.lag) ?? {}).map(num)).filter((x): x is number => x !== undefined);
  return lags.length > 0 ? String(Math.max(...lags)) : '-';
}

function shardHealth(s: Rec, replicas: readonly ReplicaRow[], expected: number | undefined): { text: string; tone: Tone } {
  const state = str(s.state);
  const reason = str(s.reason);
  if (state !== undefined && state !== 'up' && state !== 'ok') {
    return { text: reason ? `${state}: ${reason}` : state, tone: state === 'unavailable' || state === 'down' ? 'bad' : 'warn' };
  }
  const notUp = replicas.filter((r) => r.state !== 'up');
  if (notUp.length > 0) return { text: `degraded: ${notUp.map((r) => `${r.node} ${r.state}`).join(', ')}`, tone: 'warn' };
  // A move of a replica under way (docs/replication.md, "Moving a replica"): the leader's set changes.
  const prior = strings(s.priorMembers);
  const members = strings(s.members);
  if (prior.length > 0 && members.length > 0) return { text: `moving: ${prior.join(',')} -> ${members.join(',')}`, tone: 'warn' };
  const counted = num(s.replicaCount);
  if (counted !== undefined && expected !== undefined && counted < expected) return { text: `degraded: ${expected - counted} replica(s) not reported`, tone: 'warn' };
  const up = replicas.length;
  if (expected !== undefined && up > 0 && up < expected) return { text: `degraded: ${expected - up} replica(s) not reported`, tone: 'warn' };
  return { text: 'ok', tone: undefined };
}

/** A volume's lines: its header, a line per shard, and a line per replica (when listed). */
function volumeLines(v: Rec, deadIds: ReadonlySet<string>, color: boolean): string[] {
  const bold = (s: string): string => (color ? `${ANSI.bold}${s}${ANSI.reset}` : s);
  const out: string[] = [];
  const shards = arr(v.shards).map((s) => {
    const replicas = replicaRows(s, deadIds, num(v.replicas));
    return { s, replicas, health: shardHealth(s, replicas, num(v.replicas)) };
  });
  // A summary counts the shards that are not ok instead of listing them.
  const counted = num(v.shardCount);
  const bad = counted === undefined ? shards.filter((x) => x.health.text !== 'ok').length : (num(v.shardsDegraded) ?? 0) + (num(v.shardsUnavailable) ?? 0);
  // What its replicas that report it hold on their devices, together (which volumes take the
  // space); only from a reply that lists every shard's replicas.
  const listed = counted === undefined && shards.every((x) => Array.isArray(x.s.replicas));
  const stored = listed ? shards.flatMap((x) => x.replicas.map((r) => r.stored)).filter((b): b is number => b !== undefined) : [];
  out.push(
    `  ${bold(cell(v.name))}  id=${cell(v.id)}  ${cell(v.pageCount)} pages × ${cell(v.pageSize)} B  shards=${cell(counted ?? (Array.isArray(v.shards) ? shards.length : v.shards))}` +
      `  replicas=${cell(v.replicas)}${stored.length > 0 ? `  stored=${bytesText(stored.reduce((a, b) => a + b, 0))}` : ''}${bad > 0 ? `  (${bad} shard${bad === 1 ? '' : 's'} not ok)` : ''}`,
  );
  out.push(
    ...renderTable(
      {
        header: ['SHARD', 'LEADER', 'TERM', 'COMMIT LSN', 'APPLIED LSN', 'REPLICAS UP', 'REPLICA LAG', 'HEALTH'],
        rows: shards.map(({ s, replicas, health }) => {
          const counted = num(s.replicaCount);
          const up = counted ?? replicas.filter((r) => r.state === 'up').length;
          const total = Math.max(counted ?? replicas.length, num(v.replicas) ?? 0);
          // No replica up answered for it: its term and LSNs are not known (the reply's zeros are placeholders).
          const known = s.state !== 'unavailable';
          return {
            cells: [
              cell(s.shard), cell(s.leader), known ? cell(s.term) : '-', known ? cell(s.commitLsn) : '-', known ? cell(s.appliedLsn) : '-',
              total > 0 ? `${up}/${total}` : '-', shardLag(s, replicas), cell(health.text),
            ],
            tone: health.tone,
          };
        }),
      },
      '    ',
      color,
    ),
  );
  const replicaTable: Table = { header: ['SHARD', 'REPLICA', 'ROLE', 'STATE', 'TERM', 'COMMIT LSN', 'APPLIED LSN', 'LAG', 'STORED', 'NOTE'], rows: [] };
  for (const { s, replicas } of shards) {
    for (const r of replicas) {
      replicaTable.rows.push({
        cells: [cell(s.shard), cell(r.node), cell(r.role), cell(r.state), cell(r.term), cell(r.commitLsn), cell(r.appliedLsn), cell(r.lag), r.stored === undefined ? '-' : bytesText(r.stored), cell(r.note)],
        tone: r.tone,
      });
    }
  }
  if (replicaTable.rows.length > 0) out.push(...renderTable(replicaTable, '    ', color));
  return out;
}

/** The status reply as a readable terminal view. */
export function formatStatus(statusReply: unknown, options: FormatStatusOptions = {}): string {
  const color = options.color === true;
  const nowMs = options.nowMs ?? Date.now();
  const reply = rec(statusReply) ?? {};
  const self = rec(reply.node) ?? {};
  const bold = (s: string): string => (color ? `${ANSI.bold}${s}${ANSI.reset}` : s);
  const out: string[] = [];

  const nodes = nodeRows(reply);
  // The node that runs the controller, as the nodes say (with a replicated controller, the term of the catalog shard it runs it in).
  const runner = arr(reply.nodes).map((n) => rec(n.node)).find((n) => n?.controller === true);
  const where = runner === undefined ? '' : ` (on ${cell(runner.id)}${num(runner.controllerTerm) === undefined ? '' : `, term ${cell(runner.controllerTerm)}`})`;
  const controller = reply.controllerReachable === false ? 'controller NOT reachable' : `controller reachable${where}`;
  out.push(bold(`Strata cluster ${cell(self.cluster)}`) + ` — answered by node ${cell(self.id)} (version ${cell(self.version)}), ${controller}`);
  out.push('');

  // A ZONE column only in a cluster whose nodes name their failure domains.
  const zoned = nodes.some((n) => n.zone !== undefined);
  const dead = nodes.filter((n) => n.state === 'dead').length;
  const degraded = nodes.filter((n) => n.state === 'degraded' || n.state === 'no reply').length;
  out.push(bold(`NODES (${nodes.length}${dead > 0 ? `, ${dead} dead` : ''}${degraded > 0 ? `, ${degraded} degraded` : ''})`));
  out.push(
    ...renderTable(
      {
        header: ['NODE', ...(zoned ? ['ZONE'] : []), 'STATE', 'HOSTS OK', 'LOOP DELAY', 'FREE', 'UPTIME', 'VERSION', 'CONTROLLER', 'LAST SEEN', 'REASON'],
        rows: nodes.map((n) => ({
          cells: [
            cell(n.id),
            ...(zoned ? [cell(n.zone)] : []),
            n.state === 'dead' ? 'DEAD' : n.state,
            n.hostsOk !== undefined && n.hosts !== undefined ? `${n.hostsOk}/${n.hosts}` : n.hosts !== undefined ? `?/${n.hosts}` : '-',
            n.loopDelayMaxMs === undefined ? '-' : `${n.loopDelayMaxMs < 10 ? n.loopDelayMaxMs.toFixed(1) : Math.round(n.loopDelayMaxMs)}ms`,
            // The device with the least free space, of its size.
            n.space === undefined ? '-' : `${bytesText(n.space.freeBytes)} (${Math.floor((n.space.freeBytes / n.space.sizeBytes) * 100)}%)`,
            duration(n.uptimeMs),
            cell(n.version),
            n.controller === undefined ? '-' : n.controller ? 'yes' : 'no',
            // The controller's own measure when it has one: the status's clock may differ, and
            // the reply is formatted after the nodes' gather.
            n.silentMs !== undefined ? `${duration(n.silentMs)} ago` : n.lastSeenMs !== undefined ? `${duration(nowMs - n.lastSeenMs)} ago` : '-',
            n.state === 'dead'
              ? `no heartbeat${n.repairInMs === undefined ? '' : n.repairInMs > 0 ? `; replicas replaced in ${duration(n.repairInMs)}` : '; replacing its replicas'}`
              : n.state === 'no reply' ? 'did not answer status' : cell([n.draining ? 'draining' : undefined, replicasDownText(n), n.reason].filter((t) => t !== undefined).join('; ')),
          ],
          tone: n.state === 'dead' ? 'bad' : n.state === 'up' ? undefined : 'warn',
        })),
      },
      '  ',
      color,
    ),
  );
  out.push('');

  const deadIds = new Set(nodes.filter((n) => n.state === 'dead').map((n) => n.id));
  // A replicated controller's catalog shard: the controller runs on its leader's node.
  const catalogShard = rec(reply.catalogShard);
  if (catalogShard !== undefined) {
    out.push(bold('CATALOG (replicated on the controller nodes; the controller runs on its leader\'s node)'));
    out.push(...volumeLines(catalogShard, deadIds, color));
    out.push('');
  }
  const volumes = arr(reply.volumes);
  // Without the controller there is no catalog: the volumes are not known, not absent.
  const noCatalog = reply.controllerReachable === false && volumes.length === 0;
  out.push(bold(`VOLUMES (${reply.catalogError !== undefined || noCatalog ? '?' : volumes.length})`));
  if (reply.catalogError !== undefined) out.push(`  not listed (${cell(reply.catalogError)}): the volume list is larger than one NATS message`);
  else if (noCatalog) out.push('  not listed: the controller (which keeps the volume catalog) is not reachable');
  else if (volumes.length === 0) out.push('  (none)');
  if (reply.detail === 'degraded-replicas') out.push('  (the replicas of healthy shards are counted, not listed: the full status is larger than one NATS message)');
  if (reply.detail === 'summary') out.push('  (shards are counted, not listed: the status is larger than one NATS message)');
  for (const v of volumes.slice(0, STATUS_ROWS_MAX)) out.push(...volumeLines(v, deadIds, color));
  if (volumes.length > STATUS_ROWS_MAX) out.push(`  … ${volumes.length - STATUS_ROWS_MAX} more volumes`);
  // Replicas of volumes the catalog does not list (docs/protocol.md, status).
  const unlistedCount = num(reply.unlistedReplicaCount) ?? 0;
  if (unlistedCount > 0) {
    const shown = arr(reply.unlistedReplicas);
    out.push(bold(`REPLICAS OF VOLUMES THE CATALOG DOES NOT LIST (${unlistedCount})`));
    out.push('  a volume being created or deleted (for a moment), or opened on a node by hand; nodes keep them until the catalog deletes their volume');
    for (const r of shown) out.push(`  ${cell(r.node)}  volume ${cell(r.volumeId)} shard ${cell(r.shard)}`);
    if (unlistedCount > shown.length) out.push(`  … ${unlistedCount - shown.length} more`);
  }
  return out.join('\n') + '\n';
}

/** The JSON mode: the reply itself, indented. */
export function formatStatusJson(statusReply: unknown): string {
  return JSON.stringify(statusReply, (_k, v: unknown) => (v instanceof Uint8Array ? `<${v.length} bytes>` : v), 2) + '\n';
}
