/**
 * Notice: an event that ends waits early (a clean stop that begins, a controller that takes its
 * seat). `race(p)` settles as `p` does, or resolves NOTICED once `notify()` comes first. Each
 * wait's listener is removed when the wait ends, so waits that a notice never ends hold nothing
 * once they are over. A `latched` notice, once given, also ends every later wait at once.
 */

/** What `Notice.race` resolves with when the notice came first. */
export const NOTICED: unique symbol = Symbol('noticed');

export class Notice {
  private readonly waiting = new Set<() => void>();
  private given = false;

  /** `latched`: once given, the notice ends every wait that starts later at once (a stop). */
  constructor(private readonly latched = false) {}

  /** Ends every wait under way (and, latched, every later one). */
  notify(): void {
    if (this.latched) this.given = true;
    for (const end of [...this.waiting]) end();
  }

  /** Waits under way. */
  get waits(): number {
    return this.waiting.size;
  }

  /** Settles as `p` does, or resolves NOTICED when the notice comes first; `p` goes on for whoever else waits on it. */
  async race<T>(p: Promise<T>): Promise<T | typeof NOTICED> {
    if (this.given) {
      p.catch(() => undefined);
      return NOTICED;
    }
    let end = (): void => undefined;
    const noticed = new Promise<typeof NOTICED>((resolve) => (end = () => resolve(NOTICED)));
    this.waiting.add(end);
    try {
      return await Promise.race([p, noticed]);
    } finally {
      this.waiting.delete(end);
    }
  }
}
