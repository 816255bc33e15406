/**
 * A terminal view of the cluster `status` reply (`ApiRouter.clusterStatus`): nodes with their
 * health, volumes, and per shard its node, host, role, term, commit/applied LSN, replica lag
 * and health. The JSON mode of `strata status` is the reply itself (`formatStatusJson`).
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
  uptimeMs: number | undefined;
  version: string | undefined;
  controller: boolean | undefined;
  lastSeenMs: number | undefined;
}

/** Nodes: the controller's members (with liveness) merged with the nodes that answered. */
function nodeRows(reply: Rec): NodeRow[] {
  const byId = new Map<string, NodeRow>();
  const row = (id: string): NodeRow => {
    let r = byId.get(id);
    if (!r) {
      r = { id, state: 'no reply', reason: undefined, hostsOk: undefined, hosts: undefined, uptimeMs: undefined, version: undefined, controller: undefined, lastSeenMs: undefined };
      byId.set(id, r);
    }
    return r;
  };
  for (const m of arr(reply.members)) {
    const id = str(m.nodeId);
    if (id === undefined) continue;
    const r = row(id);
    r.lastSeenMs = num(m.lastSeenMs);
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
    r.uptimeMs = num(info.uptimeMs);
    r.version = str(info.version);
    r.controller = typeof info.controller === 'boolean' ? info.controller : undefined;
    // A node that answers is alive, whatever the controller last heard.
    const bad = hosts.filter((h) => h.ok !== true);
    if (info.healthy === false || bad.length > 0) {
      r.state = 'degraded';
      r.reason = bad.map((h) => `host ${cell(h.hostId)}: ${cell(h.reason ?? 'not ok')}`).join('; ') || 'unhealthy';
    } else {
      r.state = 'up';
    }
  }
  return [...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

function shardLag(s: Rec): string {
  const lag = num(s.replicaLag);
  if (lag !== undefined) return String(lag);
  const reps = arr(s.replicas);
  if (reps.length === 0) return '-';
  const lags = reps.map((r) => num(r.lagRecords) ?? num(r.lag)).filter((x): x is number => x !== undefined);
  return lags.length > 0 ? String(Math.max(...lags)) : '-';
}

function shardHealth(s: Rec): { text: string; tone: Tone } {
  const state = str(s.state);
  const reason = str(s.reason);
  if (state === undefined || state === 'up' || state === 'ok') return { text: 'ok', tone: undefined };
  return { text: reason ? `${state}: ${reason}` : state, tone: state === 'unavailable' || state === 'down' ? 'bad' : 'warn' };
}

/** The status reply as a readable terminal view. */
export function formatStatus(statusReply: unknown, options: FormatStatusOptions = {}): string {
  const color = options.color === true;
  const nowMs = options.nowMs ?? Date.now();
  const reply = rec(statusReply) ?? {};
  const self = rec(reply.node) ?? {};
  const bold = (s: string): string => (color ? `${ANSI.bold}${s}${ANSI.reset}` : s);
  const out: string[] = [];

  const controller = reply.controllerReachable === false ? 'controller NOT reachable' : 'controller reachable';
  out.push(bold(`Strata cluster ${cell(self.cluster)}`) + ` — answered by node ${cell(self.id)} (version ${cell(self.version)}), ${controller}`);
  out.push('');

  const nodes = nodeRows(reply);
  const dead = nodes.filter((n) => n.state === 'dead').length;
  const degraded = nodes.filter((n) => n.state === 'degraded' || n.state === 'no reply').length;
  out.push(bold(`NODES (${nodes.length}${dead > 0 ? `, ${dead} dead` : ''}${degraded > 0 ? `, ${degraded} degraded` : ''})`));
  out.push(
    ...renderTable(
      {
        header: ['NODE', 'STATE', 'HOSTS OK', 'UPTIME', 'VERSION', 'CONTROLLER', 'LAST SEEN', 'REASON'],
        rows: nodes.map((n) => ({
          cells: [
            cell(n.id),
            n.state === 'dead' ? 'DEAD' : n.state,
            n.hostsOk !== undefined && n.hosts !== undefined ? `${n.hostsOk}/${n.hosts}` : n.hosts !== undefined ? `?/${n.hosts}` : '-',
            duration(n.uptimeMs),
            cell(n.version),
            n.controller === undefined ? '-' : n.controller ? 'yes' : 'no',
            n.lastSeenMs !== undefined ? `${duration(nowMs - n.lastSeenMs)} ago` : '-',
            n.state === 'dead' ? 'no heartbeat' : n.state === 'no reply' ? 'did not answer status' : cell(n.reason),
          ],
          tone: n.state === 'dead' ? 'bad' : n.state === 'up' ? undefined : 'warn',
        })),
      },
      '  ',
      color,
    ),
  );
  out.push('');

  const volumes = arr(reply.volumes);
  out.push(bold(`VOLUMES (${volumes.length})`));
  if (volumes.length === 0) out.push('  (none)');
  for (const v of volumes.slice(0, STATUS_ROWS_MAX)) {
    const shards = arr(v.shards);
    const bad = shards.filter((s) => shardHealth(s).text !== 'ok').length;
    out.push(
      `  ${bold(cell(v.name))}  id=${cell(v.id)}  ${cell(v.pageCount)} pages × ${cell(v.pageSize)} B  shards=${cell(Array.isArray(v.shards) ? shards.length : v.shards)}` +
        `  replicas=${cell(v.replicas)}${bad > 0 ? `  (${bad} shard${bad === 1 ? '' : 's'} not ok)` : ''}`,
    );
    out.push(
      ...renderTable(
        {
          header: ['SHARD', 'NODE', 'HOST', 'ROLE', 'LEADER', 'TERM', 'COMMIT LSN', 'APPLIED LSN', 'REPLICA LAG', 'HEALTH'],
          rows: shards.map((s) => {
            const h = shardHealth(s);
            return {
              cells: [cell(s.shard), cell(s.node), cell(s.hostId), cell(s.role), cell(s.leader), cell(s.term), cell(s.commitLsn), cell(s.appliedLsn), shardLag(s), cell(h.text)],
              tone: h.tone,
            };
          }),
        },
        '    ',
        color,
      ),
    );
  }
  if (volumes.length > STATUS_ROWS_MAX) out.push(`  … ${volumes.length - STATUS_ROWS_MAX} more volumes`);
  return out.join('\n') + '\n';
}

/** The JSON mode: the reply itself, indented. */
export function formatStatusJson(statusReply: unknown): string {
  return JSON.stringify(statusReply, (_k, v: unknown) => (v instanceof Uint8Array ? `<${v.length} bytes>` : v), 2) + '\n';
}
