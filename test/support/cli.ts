/** Runs the `strata` CLI in this process (cluster/cli.ts `main`), its output captured. */
import { main } from '../../cluster/cli';

export async function runCli(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const sink = (append: (s: string) => void) => ({ write: (chunk: string | Uint8Array, cb?: (e?: Error | null) => void) => (append(String(chunk)), cb?.(), true) });
  const code = await main(argv, {
    stdout: sink((s) => (stdout += s)) as unknown as NodeJS.WritableStream,
    stderr: sink((s) => (stderr += s)) as unknown as NodeJS.WritableStream,
    env: {},
  } as never);
  return { code, stdout, stderr };
}
