import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Histogram } from "../../bench/histogram";
import { cdfPercentiles, escapeXml, latencyCdfSvg, writeSvg } from "../../bench/svg";

/**
 * A small well-formedness check (no XML library is a dependency): one root, every element
 * closed in order, attributes quoted, no bare `&` or `<` in text.
 */
function assertWellFormedXml(xml: string): void {
  const body = xml.replace(/^<\?xml[^?]*\?>\s*/, "");
  const stack: string[] = [];
  const token = /<\/?([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>|([^<]+)/gy;
  let roots = 0;
  let at = 0;
  while (at < body.length) {
    token.lastIndex = at;
    const m = token.exec(body);
    assert.ok(m !== null, `malformed XML near ${JSON.stringify(body.slice(at, at + 60))}`);
    at = token.lastIndex;
    if (m[4] !== undefined) {
      if (stack.length === 0) assert.match(m[4], /^\s*$/, "text outside the root element");
      assert.doesNotMatch(m[4], /&(?!(amp|lt|gt|quot|apos);)/, "bare & in text");
      continue;
    }
    const closing = m[0].startsWith("</");
    const selfClosing = m[3] === "/";
    if (closing) {
      assert.equal(stack.pop(), m[1], `closing </${m[1]}> does not match`);
    } else {
      if (stack.length === 0) roots += 1;
      if (!selfClosing) stack.push(m[1]!);
    }
  }
  assert.deepEqual(stack, [], "unclosed elements");
  assert.equal(roots, 1, "exactly one root element");
}

function histogramOf(values: number[]): Histogram {
  const h = new Histogram();
  for (const v of values) h.record(v);
  return h;
}

describe("bench/svg", () => {
  it("draws one polyline per non-empty series with the expected number of points", () => {
    const a = histogramOf(Array.from({ length: 1000 }, (_, i) => 100 + i));
    const b = histogramOf(Array.from({ length: 500 }, (_, i) => 2000 + 37 * i));
    const svg = latencyCdfSvg(
      [
        { label: "Strata R=1 <randwrite> & co", latency: a },
        { label: "NATS echo", latency: b },
        { label: "empty", latency: new Histogram() },
      ],
      { title: "latency \"CDF\"", pointsPerSeries: 51 },
    );
    assertWellFormedXml(svg);
    const polylines = [...svg.matchAll(/<polyline[^>]* points="([^"]*)"/g)];
    assert.equal(polylines.length, 2);
    for (const [, points] of polylines) {
      const pairs = points!.trim().split(/\s+/);
      assert.equal(pairs.length, 51);
      const xs = pairs.map((p) => Number(p.split(",")[0]));
      const ys = pairs.map((p) => Number(p.split(",")[1]));
      for (let i = 1; i < pairs.length; i++) {
        assert.ok(xs[i]! >= xs[i - 1]!, "latency never decreases along a CDF");
        assert.ok(ys[i]! <= ys[i - 1]!, "the fraction grows upwards (SVG y decreases)");
      }
    }
    assert.match(svg, /Strata R=1 &lt;randwrite&gt; &amp; co/);
    assert.match(svg, /empty: \(no data\)/);
    assert.match(svg, /<title>latency &quot;CDF&quot;<\/title>/);
  });

  it("uses a log axis with decade ticks covering the data", () => {
    const svg = latencyCdfSvg([{ label: "x", latency: histogramOf([150, 250, 40_000]) }], { title: "t" });
    assertWellFormedXml(svg);
    for (const label of ["100 µs", "1 ms", "10 ms", "100 ms"]) assert.ok(svg.includes(`>${label}<`), `tick ${label}`);
    assert.ok(!svg.includes(">10 µs<"));
  });

  it("is well-formed with no data at all, and refuses bad sizes", () => {
    assertWellFormedXml(latencyCdfSvg([], { title: "nothing" }));
    assert.throws(() => latencyCdfSvg([], { title: "t", pointsPerSeries: 1 }), RangeError);
    assert.throws(() => latencyCdfSvg([], { title: "t", widthPx: 10 }), RangeError);
    assert.deepEqual(cdfPercentiles(5), [0, 25, 50, 75, 100]);
    assert.equal(escapeXml(`<a href="x">&'`), "&lt;a href=&quot;x&quot;&gt;&amp;&apos;");
  });

  it("writes a timestamped and a latest file", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "strata-svg-test-"));
    try {
      const file = writeSvg(dir, "plot", latencyCdfSvg([], { title: "t" }));
      assert.ok(fs.existsSync(file));
      assert.equal(fs.readFileSync(path.join(dir, "plot-latest.svg"), "utf8"), fs.readFileSync(file, "utf8"));
      assert.throws(() => writeSvg(dir, "../x", ""), RangeError);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
