/**
 * The form of a volume id as the controller issues it: `v<n>-<tag>`, n in base 36, the tag the
 * catalog's (an id of a catalog before tags: `v<n>`). Nodes read it to tell which catalog issued
 * a volume, and whether it had issued it as of a reply (docs/replication.md, "A lost catalog").
 */

/** The number of a volume id (`v<n>` or `v<n>-<tag>`, n in base 36), or undefined for an id of another form. */
export function idNumber(id: string): number | undefined {
  const m = /^v([0-9a-z]{1,10})(?:-|$)/.exec(id);
  return m === null ? undefined : parseInt(m[1]!, 36);
}

/**
 * The key of a shard's replica, `<volumeId>.<shard>`: its directory's name on a device, and how
 * the node, its hosts and the controller name it.
 */
export function shardKey(volumeId: string, shard: number): string {
  return `${volumeId}.${shard}`;
}

/** The volume id and shard of a `shardKey` (a replica's directory name); undefined for any other name. */
export function parseShardKey(key: string): { volumeId: string; shard: number } | undefined {
  const dot = key.lastIndexOf('.');
  const shard = key.slice(dot + 1);
  if (dot <= 0 || !/^(0|[1-9]\d*)$/.test(shard)) return undefined;
  return { volumeId: key.slice(0, dot), shard: Number(shard) };
}

/** The catalog tag of a volume id (`v<n>-<tag>`), undefined for an id without one (`v<n>`). */
export function idTag(id: string): string | undefined {
  const dash = id.indexOf('-');
  return dash < 0 ? undefined : id.slice(dash + 1);
}
