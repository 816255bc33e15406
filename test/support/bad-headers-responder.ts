/**
 * A responder on a raw NATS connection that answers every message on `subject` with an empty
 * payload and a header block nats.js cannot decode (a value holding a lone LF). nats.js never
 * sends such headers, so a test that needs them speaks the protocol itself. Destroy the returned
 * socket to stop it.
 */
import * as net from 'node:net';

export async function startBadHeadersResponder(natsUrl: string, subject: string): Promise<net.Socket> {
  const socket = net.connect(Number(new URL(natsUrl).port), '127.0.0.1');
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      let buffered = '';
      socket.on('data', (d) => {
        buffered += d.toString('latin1');
        if (buffered.startsWith('INFO')) {
          buffered = '';
          socket.write(`CONNECT {"verbose":false,"headers":true}\r\nSUB ${subject} 1\r\nPING\r\n`);
          return;
        }
        if (buffered.includes('PONG')) {
          buffered = buffered.replace(/PONG\r\n/g, '');
          resolve();
        }
        const m = /MSG \S+ 1 (\S+) \d+\r\n[^]*?\r\n/.exec(buffered);
        if (m) {
          buffered = buffered.slice(m.index + m[0].length);
          const hdr = 'NATS/1.0\r\nx: a\nb\r\n\r\n';
          socket.write(`HPUB ${m[1]} ${hdr.length} ${hdr.length}\r\n${hdr}\r\n`);
        }
      });
    });
  } catch (e) {
    socket.destroy();
    throw e;
  }
  return socket;
}
