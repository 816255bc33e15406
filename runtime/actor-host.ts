/**
 * Actor host: the worker thread that owns one device and serves its shards over NATS.
 *
 * The main thread starts it (HostPool) and drives it over comlink with the `HostApi` below.
 * The host has its own NATS connection; each shard it opens subscribes to
 * `strata.<cluster>.shard.<volumeId>.<shard>`. A request is admitted to the shard's mailbox,
 * which is bounded in requests and bytes (a full mailbox answers `overloaded` at once), decoded
 * and validated, handed to the ShardActor, and answered with a CBOR reply or a typed error.
 * Requests whose deadline (Strata-Deadline header) has passed are answered `timeout` unread.
 */
import { parentPort, isMainThread } from 'node:worker_threads';
import * as Comlink from 'comlink';
import nodeEndpoint from 'comlink/dist/umd/node-adapter';
import { connect, type NatsConnection, type Msg, type Subscription, headers as natsHeaders } from 'nats';
import { encode, decode } from '../messages/codec';
import { errorReply, toProtocolError, ProtocolError, type ErrorCode } from '../messages/errors';
import { validateRequest } from '../messages/validate';
import { HEADER_DEADLINE, HEADER_TYPE, HEADER_SCHEMA, SCHEMA_VERSION, checkSchemaHeader } from '../messages/headers';
import { shardSubject } from '../messages/subjects';
import { DeviceHost, shardKey, type ShardSpec, type DeviceHostOptions, type DeviceHostStats } from './device-host';
import { createLogger, type Logger } from '../observability/log';

export interface HostConfig {
  hostId: number;
  nodeId: string;
  cluster: string;
  natsUrl: string;
  /** Directory of the device this host owns. */
  deviceDir: string;
  device?: Omit<DeviceHostOptions, 'dir' | 'disk' | 'nowMs'>;
  /** Requests admitted to one shard's mailbox at once (queued or in progress); default 1024. */
  mailboxRequestsMax?: number;
  /** Request bytes admitted to one shard's mailbox at once; default 64 MiB. */
  mailboxBytesMax?: number;
  /** Deadline applied to requests that carry none; default 30 s. */
  defaultDeadlineMs?: number;
}

export interface MailboxStats {
  volumeId: string;
  shard: number;
  depth: number;
  bytes: number;
  admitted: number;
  rejectedOverloaded: number;
  errors: number;
}

export interface HostStats {
  hostId: number;
  device: DeviceHostStats | undefined;
  natsConnected: boolean;
  mailbox: MailboxStats[];
}

export interface HostHealth {
  hostId: number;
  ok: boolean;
  natsConnected: boolean;
  deviceFailed: boolean;
  shardsDown: number;
  reason?: string;
}

export interface HostApi {
  init(config: HostConfig): Promise<void>;
  openShard(spec: ShardSpec): Promise<void>;
  closeShard(volumeId: string, shard: number, destroy: boolean): Promise<void>;
  checkpoint(): Promise<void>;
  stats(): Promise<HostStats>;
  health(): Promise<HostHealth>;
  /** Drains: stops taking requests, finishes those admitted, closes the device, closes NATS. */
  stop(): Promise<void>;
}

interface Mailbox {
  spec: ShardSpec;
  sub: Subscription;
  depth: number;
  bytes: number;
  admitted: number;
  rejectedOverloaded: number;
  errors: number;
}

/** Storage codes that are not protocol codes, mapped to what a client should do about them. */
const STORAGE_TO_PROTOCOL: Record<string, string> = {
  closed: 'unavailable',
  fsync_failed: 'device_failed',
  io_error: 'device_failed',
  invariant: 'internal',
};

function wireError(err: unknown): ProtocolError {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code === 'string' && code in STORAGE_TO_PROTOCOL) {
    const e = err as Error & { details?: Record<string, unknown> };
    return new ProtocolError(STORAGE_TO_PROTOCOL[code] as ErrorCode, e.message, e.details);
  }
  return toProtocolError(err);
}

export class ActorHost implements HostApi {
  private config: HostConfig | undefined;
  private nc: NatsConnection | undefined;
  private device: DeviceHost | undefined;
  private readonly mailboxes = new Map<string, Mailbox>();
  private timer: NodeJS.Timeout | undefined;
  private stopping = false;
  private log: Logger = createLogger({ component: 'host' });
  private inFlight = 0;
  private idle: Array<() => void> = [];

  async init(config: HostConfig): Promise<void> {
    this.config = config;
    this.log = createLogger({ component: 'host', node: config.nodeId, host: config.hostId });
    this.device = new DeviceHost({ ...(config.device ?? {}), dir: config.deviceDir });
    this.nc = await connect({
      servers: config.natsUrl,
      name: `strata-${config.nodeId}-host${config.hostId}`,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      timeout: 10_000,
    });
    this.timer = setInterval(() => this.device?.expireWaiters(Date.now()), 20);
    this.timer.unref();
  }

  async openShard(spec: ShardSpec): Promise<void> {
    const { device, nc, config } = this.ready();
    const key = shardKey(spec.volumeId, spec.shard);
    device.openShard(spec);
    if (this.mailboxes.has(key)) return;
    const subject = shardSubject(config.cluster, spec.volumeId, spec.shard);
    const mailbox: Mailbox = {
      spec,
      sub: undefined as unknown as Subscription,
      depth: 0,
      bytes: 0,
      admitted: 0,
      rejectedOverloaded: 0,
      errors: 0,
    };
    mailbox.sub = nc.subscribe(subject, { callback: (err, msg) => {
      if (!err) this.admit(mailbox, msg);
    } });
    this.mailboxes.set(key, mailbox);
    // Make sure the server knows of the subscription before the shard is reported open, so a
    // request sent right after does not meet "no responders".
    await nc.flush();
  }

  async closeShard(volumeId: string, shard: number, destroy: boolean): Promise<void> {
    const { device } = this.ready();
    const key = shardKey(volumeId, shard);
    const mb = this.mailboxes.get(key);
    if (mb) {
      mb.sub.unsubscribe();
      this.mailboxes.delete(key);
    }
    device.closeShard(volumeId, shard, { destroy });
  }

  async checkpoint(): Promise<void> {
    await this.ready().device.checkpointAll();
  }

  async stats(): Promise<HostStats> {
    const mailbox: MailboxStats[] = [];
    for (const m of this.mailboxes.values()) {
      mailbox.push({
        volumeId: m.spec.volumeId, shard: m.spec.shard, depth: m.depth, bytes: m.bytes,
        admitted: m.admitted, rejectedOverloaded: m.rejectedOverloaded, errors: m.errors,
      });
    }
    return {
      hostId: this.config?.hostId ?? -1,
      device: this.device?.stats(),
      natsConnected: this.nc !== undefined && !this.nc.isClosed(),
      mailbox,
    };
  }

  async health(): Promise<HostHealth> {
    const st = this.device?.stats();
    const natsConnected = this.nc !== undefined && !this.nc.isClosed();
    const deviceFailed = st?.queue.state === 'failed';
    const shardsDown = st?.shards.filter((s) => s.state === 'down').length ?? 0;
    const ok = natsConnected && !deviceFailed && shardsDown === 0;
    const reason = ok ? undefined : !natsConnected ? 'NATS disconnected' : deviceFailed ? 'device failed' : `${shardsDown} shard(s) down`;
    return { hostId: this.config?.hostId ?? -1, ok, natsConnected, deviceFailed, shardsDown, ...(reason ? { reason } : {}) };
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    for (const m of this.mailboxes.values()) m.sub.unsubscribe();
    if (this.inFlight > 0) {
      await Promise.race([
        new Promise<void>((r) => this.idle.push(r)),
        new Promise<void>((r) => setTimeout(r, 10_000).unref()),
      ]);
    }
    if (this.timer) clearInterval(this.timer);
    await this.device?.close();
    try {
      await this.nc?.drain();
    } catch {
      // Already closed.
    }
  }

  private ready(): { device: DeviceHost; nc: NatsConnection; config: HostConfig } {
    if (!this.device || !this.nc || !this.config) throw new Error('host not initialized');
    if (this.stopping) throw Object.assign(new Error('host is stopping'), { code: 'unavailable' });
    return { device: this.device, nc: this.nc, config: this.config };
  }

  private admit(mb: Mailbox, msg: Msg): void {
    if (!msg.reply) return; // A request with nowhere to answer: nothing to do.
    const cfg = this.config!;
    const size = msg.data.length;
    if (mb.depth + 1 > (cfg.mailboxRequestsMax ?? 1024) || mb.bytes + size > (cfg.mailboxBytesMax ?? 64 * 1024 * 1024)) {
      mb.rejectedOverloaded++;
      this.respond(msg, errorReply(new ProtocolError('overloaded', `shard ${mb.spec.volumeId}/${mb.spec.shard} mailbox is full`, {
        depth: mb.depth,
        bytes: mb.bytes,
      })));
      return;
    }
    mb.depth++;
    mb.bytes += size;
    mb.admitted++;
    this.inFlight++;
    this.handle(mb, msg)
      .then(
        (reply) => this.respond(msg, reply),
        (err: unknown) => {
          mb.errors++;
          const pe = wireError(err);
          if (pe.code === 'internal') this.log.error('request failed', { volume: mb.spec.volumeId, shard: mb.spec.shard, err });
          const fatal = this.device!.onActorError(mb.spec.volumeId, mb.spec.shard, err);
          if (fatal) this.log.warn('shard restarted from durable state', { volume: mb.spec.volumeId, shard: mb.spec.shard, code: pe.code });
          this.respond(msg, errorReply(pe));
        },
      )
      .finally(() => {
        mb.depth--;
        mb.bytes -= size;
        this.inFlight--;
        if (this.inFlight === 0 && this.idle.length > 0) for (const r of this.idle.splice(0)) r();
      });
  }

  private async handle(mb: Mailbox, msg: Msg): Promise<unknown> {
    const hdrs = msg.headers;
    const headerView = { get: (k: string) => hdrs?.get(k) ?? '' };
    checkSchemaHeader(headerView);
    const now = Date.now();
    const deadlineText = headerView.get(HEADER_DEADLINE);
    const deadlineMs = deadlineText ? Number(deadlineText) : now + (this.config!.defaultDeadlineMs ?? 30_000);
    if (!Number.isFinite(deadlineMs)) throw new ProtocolError('bad_request', `${HEADER_DEADLINE}: not a number`);
    if (deadlineMs <= now) throw new ProtocolError('timeout', 'the request deadline passed before it was handled');
    const type = headerView.get(HEADER_TYPE);
    const body = decode(msg.data);
    const actor = this.device!.actor(mb.spec.volumeId, mb.spec.shard);
    switch (type) {
      case 'shard.write': {
        const req = validateRequest('shard.write', body);
        const r = await actor.write(req.pages);
        return { lsn: r.lsn };
      }
      case 'shard.read': {
        const req = validateRequest('shard.read', body);
        const r = await actor.read(req.pages, { ...(req.lsn !== undefined ? { lsn: req.lsn } : {}), deadlineMs, nowMs: now });
        return { pages: r.pages, lsn: r.lsn };
      }
      case 'shard.flush': {
        validateRequest('shard.flush', body);
        return actor.flush();
      }
      default:
        throw new ProtocolError('bad_request', `${HEADER_TYPE}: unknown message type '${type}' for a shard`, {
          supported: ['shard.write', 'shard.read', 'shard.flush'],
        });
    }
  }

  private respond(msg: Msg, reply: unknown): void {
    let bytes: Uint8Array;
    try {
      bytes = encode(reply);
    } catch (e) {
      this.log.error('reply encoding failed', { err: e });
      bytes = encode(errorReply(new ProtocolError('internal', 'reply encoding failed')));
    }
    const h = natsHeaders();
    h.set(HEADER_SCHEMA, String(SCHEMA_VERSION));
    msg.respond(bytes, { headers: h });
  }
}

if (!isMainThread && parentPort) {
  Comlink.expose(new ActorHost(), nodeEndpoint(parentPort as never));
}
