/**
 * A controller node beside "ghost" nodes played by the test on one NATS connection: each ghost
 * heartbeats (while `beating(ghost)`), and its `shards.open`, `shards.destroy` (and, if given,
 * `volume.grow`) requests go to the test's handlers, which answer them, hold them, or never
 * answer (a frozen node). Each answers its claim subject as a node does (the test's `claim`
 * handler, if given, instead), and `kill` makes one vanish as a killed node does: its
 * subscriptions and heartbeats end.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { connect as natsConnect, type Msg, type NatsConnection, type Subscription } from 'nats';
import { startNatsServer, type NatsServerHandle } from '../../runtime/nats-server';
import { StrataNode } from '../../cluster/node';
import { createClient, NatsTransport, type StrataClient } from '../../cluster/client';
import { encode, decode } from '../../messages/codec';
import { controllerSubject, nodeSubject } from '../../messages/control';
import { waitFor } from './wait';

export interface GhostHandlers {
  open(ghost: string, msg: Msg): void;
  destroy(ghost: string, msg: Msg): void;
  /** A question on its claim subject (the controller's check that it is still there); default: answered. */
  claim?(ghost: string, msg: Msg): void;
  /** A `volume.grow` (a resize of a volume it holds); default: not served (no responders). */
  grow?(ghost: string, msg: Msg): void;
  /** Whether ghost `ghost` heartbeats now; default always. */
  beating?(ghost: string): boolean;
}

export class GhostController {
  private timer: NodeJS.Timeout | undefined;
  private readonly subs = new Map<string, Subscription[]>();
  private readonly killed = new Set<string>();
  node: StrataNode | undefined;

  private constructor(
    readonly cluster: string,
    readonly nats: NatsServerHandle,
    readonly fake: NatsConnection,
    private readonly root: string,
  ) {}

  /** The NATS server, the ghosts and the controller node `ctl`; resolves once the controller counts every ghost live. */
  static async start(cluster: string, ghosts: readonly string[], handlers: GhostHandlers): Promise<GhostController> {
    const nats = await startNatsServer({ jetstream: false });
    const g = new GhostController(cluster, nats, await natsConnect({ servers: nats.url }), fs.mkdtempSync(path.join(os.tmpdir(), `strata-${cluster}-`)));
    const claim = handlers.claim ?? ((_ghost: string, msg: Msg): void => void msg.respond(encode({})));
    for (const ghost of ghosts) {
      g.subs.set(ghost, [
        g.fake.subscribe(nodeSubject(cluster, ghost, 'shards.open'), { callback: (_e, msg) => handlers.open(ghost, msg) }),
        g.fake.subscribe(nodeSubject(cluster, ghost, 'shards.destroy'), { callback: (_e, msg) => handlers.destroy(ghost, msg) }),
        g.fake.subscribe(nodeSubject(cluster, ghost, 'claim'), { callback: (_e, msg) => claim(ghost, msg) }),
        ...(handlers.grow === undefined ? [] : [g.fake.subscribe(nodeSubject(cluster, ghost, 'volume.grow'), { callback: (_e, msg) => handlers.grow!(ghost, msg) })]),
      ]);
    }
    const beat = (): void => {
      for (const ghost of ghosts.filter((x) => !g.killed.has(x) && handlers.beating?.(x) !== false)) g.fake.request(controllerSubject(cluster, 'heartbeat'), encode({ nodeId: ghost, hosts: 1 })).catch(() => undefined);
    };
    beat();
    g.timer = setInterval(beat, 200);
    try {
      g.node = await StrataNode.start({ nodeId: 'ctl', cluster, natsUrl: nats.url, dataDir: path.join(g.root, 'ctl'), hosts: 1, controller: true, heartbeatMs: 100 });
      await waitFor(`${ghosts.length + 1} live members`, async () => {
        const r = decode((await g.fake.request(controllerSubject(cluster, 'members'), encode({}))).data) as { members?: Array<{ live: boolean }> };
        return Array.isArray(r.members) && r.members.filter((m) => m.live).length === ghosts.length + 1;
      });
    } catch (e) {
      await g.stop();
      throw e;
    }
    return g;
  }

  /** Ghost `ghost` is gone as a killed node is: its subscriptions and heartbeats end, nothing it held is answered. */
  async kill(ghost: string): Promise<void> {
    this.killed.add(ghost);
    for (const sub of this.subs.get(ghost) ?? []) sub.unsubscribe();
    await this.fake.flush();
  }

  /** Whether the controller counts node `nodeId` live now (its `members`). */
  async counted(nodeId: string): Promise<boolean> {
    const r = decode((await this.fake.request(controllerSubject(this.cluster, 'members'), encode({}))).data) as { members?: Array<{ nodeId: string; live: boolean }> };
    return r.members?.find((m) => m.nodeId === nodeId)?.live === true;
  }

  /** A client on the ghosts' connection. */
  client(timeoutMs: number): StrataClient {
    return createClient(new NatsTransport(this.fake), { cluster: this.cluster, timeoutMs });
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.node?.stop();
    await this.fake.close();
    await this.nats.stop();
    fs.rmSync(this.root, { recursive: true, force: true });
  }
}
