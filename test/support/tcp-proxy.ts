/**
 * A TCP proxy on loopback for tests: to a target port, optionally delaying every chunk each way
 * (order kept), and able to cut every connection and take none until restored on its port.
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

export async function startTcpProxy(target: number, opts: { delayMs?: number } = {}): Promise<TcpProxy> {
  const sockets = new Set<net.Socket>();
  let server: net.Server | undefined;
  const forward = (from: net.Socket, to: net.Socket): void => {
    if (opts.delayMs === undefined) from.pipe(to);
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
        forward(client, upstream);
        forward(upstream, client);
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
