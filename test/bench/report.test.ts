import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fitProgressLine, progressBar, removeDirectory } from "../../bench/report";

describe("bench/report", () => {
  const tail = `${progressBar(0.25, 20)} 2.5/10.0 s`;

  it("keeps the bar and the timer of a progress line on an 80-column terminal, cutting a long label instead", () => {
    for (const label of [
      "[4 KiB at 1 in flight] R=1 randread (cached): warming up (a slow subject: until 2000 requests)",
      "[128 KiB (32 x 4 KiB) at 16 in flight] round 1/3: raw append + fdatasync, 16/batch",
    ]) {
      const line = fitProgressLine(label, tail, 80);
      assert.ok(line.length <= 79, `${line.length} columns: ${line}`);
      assert.ok(line.endsWith(` ${tail}`), line);
      assert.ok(line.startsWith(label.slice(0, 20)), line);
      assert.match(line, /… \[/, "the label is marked as cut");
    }
  });

  it("leaves a line that fits as it is, and cuts from the right only what is narrower than its tail", () => {
    assert.equal(fitProgressLine("[g] phase", tail, 80), `[g] phase ${tail}`);
    assert.equal(fitProgressLine("[g] starting…", "", 80), "[g] starting…");
    assert.equal(fitProgressLine("x".repeat(100), "", 80), `${"x".repeat(78)}…`);
    assert.equal(fitProgressLine("[g] phase", tail, 20), `[g] phase ${tail}`.slice(0, 19));
  });

  it("tells a directory it cannot remove in one line and goes on, where fs.rmSync throws", () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "strata-report-test-"));
    try {
      const file = path.join(root, "file");
      fs.writeFileSync(file, "");
      const under = path.join(file, "raw-append");
      assert.throws(() => fs.rmSync(under, { recursive: true, force: true }), /ENOTDIR/);
      const lines: string[] = [];
      removeDirectory(under, (line) => lines.push(line));
      assert.equal(lines.length, 1);
      assert.match(lines[0]!, /^strata bench: warning: could not remove \S+\/file\/raw-append: ENOTDIR[^\n]*\n$/);
      const dir = path.join(root, "dir");
      fs.mkdirSync(path.join(dir, "sub"), { recursive: true });
      removeDirectory(dir, (line) => lines.push(line));
      assert.equal(fs.existsSync(dir), false);
      assert.equal(lines.length, 1);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});
