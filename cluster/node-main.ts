/**
 * `strata node`: runs one node in this process until SIGINT/SIGTERM, then stops it cleanly
 * (mailboxes and device queues drained, NATS connections drained, telemetry flushed).
 *
 * The process's telemetry is started first (once per process): the Prometheus endpoint on
 * `metricsPort` (0 = none), span exporters and sampling from the config or OTEL_* variables.
 */
import { StrataNode, STRATA_VERSION } from './node';
import { ConfigError, type NodeConfig } from './config';
import { createLogger } from '../observability/log';
import { startTelemetry } from '../observability/telemetry';
import { redactNatsUrl } from '../runtime/nats-url';

export async function runNode(config: NodeConfig): Promise<{ stop(): Promise<void> }> {
  const log = createLogger({ component: 'node-main', node: config.nodeId });
  const telemetry = startTelemetry({
    nodeId: config.nodeId,
    cluster: config.cluster,
    version: STRATA_VERSION,
    metricsPort: config.metricsPort,
    ...(config.traceExporters !== undefined ? { traceExporters: config.traceExporters } : {}),
    ...(config.sampling !== undefined ? { sampling: config.sampling } : {}),
    ...(config.samplingRatio !== undefined ? { samplingRatio: config.samplingRatio } : {}),
  });
  let node: StrataNode;
  try {
    // A metrics port that cannot be bound is a configuration error: fail before serving.
    await telemetry.ready.catch((err: unknown) => {
      throw new ConfigError(`--metrics-port: the metrics endpoint cannot listen on port ${config.metricsPort}: ${(err as Error).message}`);
    });
    node = await StrataNode.start({
      nodeId: config.nodeId,
      cluster: config.cluster,
      natsUrl: config.natsUrl,
      ...(config.natsAuth !== undefined ? { natsAuth: config.natsAuth } : {}),
      ...(config.natsTls !== undefined ? { natsTls: config.natsTls } : {}),
      dataDir: config.dataDir,
      hosts: config.hosts,
      ...(config.zone !== undefined ? { zone: config.zone } : {}),
      controller: config.controller,
      ...(config.controllers !== undefined ? { controllers: config.controllers } : {}),
      ...(config.newCluster === true ? { newCluster: true } : {}),
      ...(config.cacheBytesMaxPerShard !== undefined ? { cacheBytesMaxPerShard: config.cacheBytesMaxPerShard } : {}),
      ...(config.segmentBytesMax !== undefined ? { segmentBytesMax: config.segmentBytesMax } : {}),
      ...(config.checkpointEveryRecords !== undefined ? { checkpointEveryRecords: config.checkpointEveryRecords } : {}),
      ...(config.scrubBytesPerSecond !== undefined ? { scrubBytesPerSecond: config.scrubBytesPerSecond } : {}),
      ...(config.retainRecords !== undefined ? { retainRecords: config.retainRecords } : {}),
      ...(config.spaceReserveBytes !== undefined ? { spaceReserveBytes: config.spaceReserveBytes } : {}),
      ...(config.mailboxRequestsMax !== undefined ? { mailboxRequestsMax: config.mailboxRequestsMax } : {}),
      ...(config.mailboxBytesMax !== undefined ? { mailboxBytesMax: config.mailboxBytesMax } : {}),
      ...(config.repairAfterSeconds !== undefined ? { repairAfterMs: config.repairAfterSeconds * 1000 } : {}),
      ...(config.hostHeapInitial !== undefined ? { hostHeapInitialMiB: Math.floor(config.hostHeapInitial / (1024 * 1024)) } : {}),
      // The node stopped itself (logged there): the process ends, for its supervisor to see.
      onFatal: () => process.exit(1),
    });
  } catch (e) {
    await telemetry.shutdown().catch(() => undefined);
    throw e;
  }
  log.info('node started', {
    cluster: config.cluster, nats: redactNatsUrl(config.natsUrl), dataDir: config.dataDir, hosts: config.hosts, metricsPort: telemetry.metricsPort, sampling: telemetry.sampling,
    ...node.startInfo,
  });
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= node
      .stop()
      .then(() => telemetry.shutdown())
      .then(() => log.info('node stopped'));
    return stopping;
  };
  const onSignal = (): void => {
    void stop().then(() => process.exit(0));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  return { stop };
}
