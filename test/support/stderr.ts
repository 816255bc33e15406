/** Keeps what is written to stderr off the terminal, in `written`, until `restore`. */
function capture(): { written: string[]; restore(): void } {
  const written: string[] = [];
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array): boolean => {
    written.push(String(chunk));
    return true;
  }) as typeof process.stderr.write;
  return { written, restore: () => void (process.stderr.write = write) };
}

/** What `fn` writes to stderr while it runs (kept off the terminal); its error is thrown. */
export function stderrOfSync(fn: () => void): string[] {
  const c = capture();
  try {
    fn();
  } finally {
    c.restore();
  }
  return c.written;
}

/** As stderrOfSync, for a function that settles later: what it wrote until then. */
export async function stderrOf(fn: () => Promise<unknown>): Promise<string[]> {
  const c = capture();
  try {
    await fn();
  } finally {
    c.restore();
  }
  return c.written;
}
