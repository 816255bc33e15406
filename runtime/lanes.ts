/**
 * Runs `each` over `items` with at most `lanes` calls at a time, taking the items in order: a
 * lane that finishes one takes the next not yet taken. Resolves when every call has; a call that
 * rejects rejects the whole at once, and ends its lane (the other lanes go on with the items left,
 * so `each` handles the failures it can).
 */
export async function inLanes<T>(items: readonly T[], lanes: number, each: (item: T) => Promise<void>): Promise<void> {
  if (!Number.isInteger(lanes) || lanes < 1) throw new RangeError(`lanes must be a positive integer, got ${lanes}`);
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) await each(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(lanes, items.length) }, lane));
}
