/**
 * The alerting rules Strata ships (observability/alerts.yml) fire as their unit tests
 * (observability/alerts.test.yml) say: `promtool test rules`, from Debian's prometheus package
 * (`npm test` installs it).
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

const PROMTOOL = '/usr/bin/promtool';

describe('observability/alerts.yml', () => {
  it('passes its unit tests (promtool test rules)', function () {
    if (!fs.existsSync(PROMTOOL)) {
      console.log(`      (skipped: ${PROMTOOL} not found; install Debian's prometheus package)`);
      this.skip();
    }
    const tests = path.join(__dirname, '..', '..', '..', 'observability', 'alerts.test.yml');
    const r = spawnSync(PROMTOOL, ['test', 'rules', tests], { encoding: 'utf8' });
    assert.equal(r.status, 0, `promtool test rules:\n${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /SUCCESS/);
  });
});
