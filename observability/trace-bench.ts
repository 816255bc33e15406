/**
 * The cost of tracing one request hop, as an actor host pays it.
 *
 *   node dist/observability/trace-bench.js [--ops 200000] [--json]
 *
 * One operation = what a shard request costs in tracing on its host thread: extract the
 * traceparent of the request's headers, a SERVER span `process shard.write` with messaging
 * attributes, a child span `shard.write`, and inject the traceparent into the headers of a
 * message sent on. Tracing is set up as on an actor host (`startWorkerTracing`: batching span
 * processor, spans serialized and posted on a MessagePort, drained by a listener as the main
 * thread would), and measured with:
 * - `none`: no tracing set up at all (OpenTelemetry API no-ops; the baseline),
 * - `off`, `ratio 1%`, `always`: the three sampling modes.
 * Requests arrive with a traceparent sampled as the mode samples (a client with the same
 * setting decided at the root); the figures are per operation, including the forwarding of
 * finished spans to the other thread.
 */
import { MessageChannel } from 'node:worker_threads';
import { startWorkerTracing, type SamplingMode } from './telemetry';
import { extractContext, injectTraceparent, messagingAttributes, withSpan, ATTR } from './tracing';

interface Mode {
  name: string;
  sampling: SamplingMode | undefined;
  ratio: number;
}

const MODES: Mode[] = [
  { name: 'none', sampling: undefined, ratio: 0 },
  { name: 'off', sampling: 'off', ratio: 0 },
  { name: 'ratio 1%', sampling: 'ratio', ratio: 0.01 },
  { name: 'always', sampling: 'always', ratio: 1 },
];

/** Operations between two flushes of the span processor (keeps its bounded queue from dropping). */
const CHUNK_OPS = 512;
const SUBJECT = 'strata.bench.shard.v1.0';

class Headers {
  private readonly map = new Map<string, string>();
  get(k: string): string {
    return this.map.get(k) ?? '';
  }
  set(k: string, v: string): void {
    this.map.set(k, v);
  }
}

function randomHex(chars: number): string {
  let s = '';
  while (s.length < chars) s += Math.floor(Math.random() * 0x100000000).toString(16).padStart(8, '0');
  return s.slice(0, chars);
}

/**
 * Incoming headers as a client with the same sampling sends them: every request has a
 * traceparent, sampled with probability `ratio` (the client decided at the root).
 */
function incoming(count: number, ratio: number): Headers[] {
  const out: Headers[] = [];
  for (let i = 0; i < count; i++) {
    const h = new Headers();
    h.set('traceparent', `00-${randomHex(32)}-${randomHex(16)}-${Math.random() < ratio ? '01' : '00'}`);
    out.push(h);
  }
  return out;
}

function oneOp(h: Headers, attrs: ReturnType<typeof messagingAttributes>): void {
  withSpan('process shard.write', attrs, () => {
    withSpan('shard.write', { [ATTR.volume]: 'v1', [ATTR.shard]: 0, [ATTR.pages]: 1 }, () => {
      injectTraceparent(new Headers());
    });
  }, { parent: extractContext(h), kind: 1 });
}

async function run(mode: Mode, ops: number): Promise<{ mode: string; nsPerOp: number; spansPerOp: number }> {
  const { port1, port2 } = new MessageChannel();
  let spans = 0;
  port1.on('message', (m: { spans?: unknown[] }) => {
    spans += m.spans?.length ?? 0;
  });
  const tracing = mode.sampling === undefined ? undefined : startWorkerTracing({ port: port2, sampling: mode.sampling, samplingRatio: mode.ratio });
  const headers = incoming(4096, mode.ratio);
  const attrs = messagingAttributes(SUBJECT, 'shard.write', 'process', 4200);
  const loop = async (n: number): Promise<void> => {
    for (let i = 0; i < n; i++) {
      oneOp(headers[i % headers.length]!, attrs);
      if (i % CHUNK_OPS === CHUNK_OPS - 1) await tracing?.forceFlush();
    }
    await tracing?.forceFlush();
  };
  await loop(Math.min(20_000, ops)); // warm-up
  await new Promise((r) => setImmediate(r));
  spans = 0;
  const t0 = process.hrtime.bigint();
  await loop(ops);
  const ns = Number(process.hrtime.bigint() - t0);
  // Let the last posted batches arrive before counting.
  await new Promise((r) => setTimeout(r, 50));
  await tracing?.shutdown();
  port1.close();
  if (tracing === undefined) port2.close();
  return { mode: mode.name, nsPerOp: ns / ops, spansPerOp: spans / ops };
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const opsArg = args.indexOf('--ops');
  const ops = opsArg >= 0 ? Number(args[opsArg + 1]) : 200_000;
  if (!Number.isSafeInteger(ops) || ops < 1000 || ops > 10_000_000) throw new Error('--ops must be 1000..10000000');
  const results = [];
  for (const mode of MODES) results.push(await run(mode, ops));
  const base = results[0]!.nsPerOp;
  if (args.includes('--json')) {
    console.log(JSON.stringify({ ops, node: process.version, results }, null, 2));
    return;
  }
  console.log(`tracing cost per request hop (extract + 2 spans + inject), ${ops} ops, Node ${process.version}`);
  console.log('mode        µs/op   overhead µs/op   spans/op');
  for (const r of results) {
    console.log(
      `${r.mode.padEnd(10)} ${(r.nsPerOp / 1000).toFixed(3).padStart(6)}   ${((r.nsPerOp - base) / 1000).toFixed(3).padStart(14)}   ${r.spansPerOp.toFixed(3).padStart(8)}`,
    );
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
