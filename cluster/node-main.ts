/**
 * `strata node`: runs one node in this process until SIGINT/SIGTERM, then stops it cleanly
 * (mailboxes and device queues drained, NATS connections drained).
 */
import { StrataNode } from './node';
import type { NodeConfig } from './config';
import { createLogger } from '../observability/log';

export async function runNode(config: NodeConfig): Promise<{ stop(): Promise<void> }> {
  const log = createLogger({ component: 'node-main', node: config.nodeId });
  const node = await StrataNode.start({
    nodeId: config.nodeId,
    cluster: config.cluster,
    natsUrl: config.natsUrl,
    dataDir: config.dataDir,
    hosts: config.hosts,
    controller: config.controller,
    ...(config.cacheBytesMaxPerShard !== undefined ? { cacheBytesMaxPerShard: config.cacheBytesMaxPerShard } : {}),
    ...(config.segmentBytesMax !== undefined ? { segmentBytesMax: config.segmentBytesMax } : {}),
    ...(config.checkpointEveryRecords !== undefined ? { checkpointEveryRecords: config.checkpointEveryRecords } : {}),
    ...(config.mailboxRequestsMax !== undefined ? { mailboxRequestsMax: config.mailboxRequestsMax } : {}),
    ...(config.mailboxBytesMax !== undefined ? { mailboxBytesMax: config.mailboxBytesMax } : {}),
  });
  log.info('node started', { cluster: config.cluster, nats: config.natsUrl, dataDir: config.dataDir, hosts: config.hosts });
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= node.stop().then(() => log.info('node stopped'));
    return stopping;
  };
  const onSignal = (): void => {
    void stop().then(() => process.exit(0));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  return { stop };
}
