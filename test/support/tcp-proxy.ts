/**
 * A TCP proxy on loopback for tests: to a target port, optionally delaying every chunk each way
 * (order kept), and able to cut every connection and take none until restored on its port. With
 * `freezeWhen`, a connection whose client sends a chunk it matches forwards nothing more either
 * way from then on, its sockets left open: a server that stopped answering (a frozen process).
 */
import * as net from 'node:net';

export interface TcpProxy {
  readonly port: number;
  readonly url: string;
  /** Drops every connection and stops listening. */
  cut(): Promise<void>;
  /** Listens again on the same port. */
  restore(): Promise<void>;
}

export async function startTcpProxy(target: number, opts: { delayMs?: number; freezeWhen?: (clientChunk: Buffer) => boolean } = {}): Promise<TcpProxy> {
  const sockets = new Set<net.Socket>();
  let server: net.Server | undefined;
  /** `frozen`: the connection's state (`freezeWhen`), and `when`, what freezes it in this direction. */
  const forward = (from: net.Socket, to: net.Socket, frozen?: { is: boolean }, when?: (chunk: Buffer) => boolean): void => {
    if (frozen !== undefined) {
      from.on('data', (d: Buffer) => {
        if (!frozen.is && when?.(d) === true) frozen.is = true;
        if (!frozen.is && to.writable) to.write(d);
      });
    } else if (opts.delayMs === undefined) from.pipe(to);
    else from.on('data', (d) => setTimeout(() => to.writable && to.write(d), opts.delayMs));
  };
  const listen = (port: number): Promise<number> =>
    new Promise((resolve, reject) => {
      server = net.createServer((client) => {
        const upstream = net.connect(target, '127.0.0.1');
        const end = (): void => {
          client.destroy();
          upstream.destroy();
        };
        for (const s of [client, upstream]) {
          sockets.add(s);
          s.on('error', end);
          s.on('close', end);
        }
        if (opts.freezeWhen !== undefined) {
          const frozen = { is: false };
          forward(client, upstream, frozen, opts.freezeWhen);
          forward(upstream, client, frozen);
        } else {
          forward(client, upstream);
          forward(upstream, client);
        }
      });
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve((server!.address() as net.AddressInfo).port));
    });
  const port = await listen(0);
  return {
    port,
    url: `nats://127.0.0.1:${port}`,
    cut: async () => {
      for (const s of sockets) s.destroy();
      sockets.clear();
      await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
      server = undefined;
    },
    restore: async () => {
      await listen(port);
    },
  };
}
