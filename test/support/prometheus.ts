/** Reading a Strata process's metrics endpoint in tests: an HTTP GET and the samples of a scrape. */
import * as http from 'node:http';

/** GET `urlPath` on 127.0.0.1:`port`, whatever its status, within 5 s. */
export function httpGet(port: number, urlPath: string): Promise<{ status: number; body: string; contentType: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, contentType: res.headers['content-type'] }));
    });
    req.on('timeout', () => req.destroy(new Error('scrape timed out')));
    req.on('error', reject);
  });
}

/** The Prometheus text of `/metrics` on `port`; anything but HTTP 200 fails. */
export async function scrapeMetrics(port: number): Promise<string> {
  const r = await httpGet(port, '/metrics');
  if (r.status !== 200) throw new Error(`HTTP ${r.status}`);
  return r.body;
}

/** The values of the samples of `name` whose labels include `labels`, in the order of the text. */
export function samples(text: string, name: string, labels: Record<string, string> = {}): number[] {
  const out: number[] = [];
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = new Map<string, string>();
    for (const kv of (m[3] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) have.set(kv[1]!, kv[2]!);
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) out.push(Number(m[4]));
  }
  return out;
}
