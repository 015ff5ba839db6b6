#!/usr/bin/env node
// check.mjs drives the `mesh viz dashboard` page in Debian's chromium and
// checks that it shows live data from the viz API:
//
//   node check.mjs --url URL --namespace NS --deployments a,b,c --screenshot out.png
//                  [--tap-resource deploy/X] [--workload NAME] [--timeout 60]
//                  [--chromium /usr/bin/chromium]
//
// 1. the overview (#/) lists NS;
// 2. following its link, the namespace page lists every deployment and the
//    service graph draws at least one edge;
// 3. following a deployment's link (--workload, default the first of
//    --deployments), the RPS chart has points and redraws new data at
//    least twice;
// 4. with --tap-resource, a tap on it shows at least one event, and Stop
//    stops it.
// It saves full-page screenshots: the workload page to --screenshot, the
// namespace and tap pages next to it (NAME-namespace.png, NAME-tap.png); on
// a failure, the page as it was to --screenshot.
//
// Any console error or uncaught exception on the page fails the check, and
// so does any wait longer than --timeout seconds (at most 60). The exit
// status is 0 when every check passed, 1 when one failed, 2 on bad usage.
//
// Setup: npm ci (PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 is harmless: only
// playwright-core is installed, which never downloads a browser) and
// apt-get install chromium.

import { mkdir } from 'node:fs/promises';
import { dirname, extname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

// Without these flags Debian's chromium waits on the network (component
// updates, sync, QUIC probes) on a closed network, and may hang.
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const MAX_WAIT_S = 60;
const WATCHDOG_S = 10 * 60;

class CheckFailed extends Error {}

class UsageError extends Error {}

function parseFlags(argv) {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        url: { type: 'string' },
        namespace: { type: 'string' },
        deployments: { type: 'string' },
        screenshot: { type: 'string' },
        'tap-resource': { type: 'string' },
        workload: { type: 'string' },
        timeout: { type: 'string', default: String(MAX_WAIT_S) },
        chromium: {
          type: 'string',
          default: process.env.CHROMIUM || '/usr/bin/chromium',
        },
      },
    }));
  } catch (err) {
    throw new UsageError(err.message);
  }
  for (const req of ['url', 'namespace', 'deployments', 'screenshot']) {
    if (!values[req]) throw new UsageError(`--${req} is required`);
  }
  const deployments = values.deployments
    .split(',')
    .map((d) => d.trim())
    .filter((d) => d !== '');
  if (deployments.length === 0) throw new UsageError('--deployments: give at least one name');
  const timeout = Number(values.timeout);
  if (!(timeout > 0 && timeout <= MAX_WAIT_S)) throw new UsageError(`--timeout: want seconds in (0, ${MAX_WAIT_S}]`);
  const workload = values.workload || deployments[0];
  const tap = values['tap-resource'];
  if (tap !== undefined && !/^[a-z]+\/[^/]+$/.test(tap))
    throw new UsageError('--tap-resource: want KIND/NAME, e.g. deploy/web');
  let base;
  try {
    base = new URL(values.url);
  } catch {
    throw new UsageError(`--url: not a URL: ${values.url}`);
  }
  base.hash = '';
  return {
    url: base.toString(),
    namespace: values.namespace,
    deployments,
    workload,
    tap,
    screenshot: resolve(values.screenshot),
    timeoutMs: timeout * 1000,
    chromium: values.chromium,
  };
}

/** sel quotes an attribute value for a CSS selector. */
function attr(name, value) {
  return `[${name}=${JSON.stringify(value)}]`;
}

function sibling(path, suffix) {
  const ext = extname(path) || '.png';
  return `${path.slice(0, path.length - extname(path).length)}-${suffix}${ext}`;
}

async function run(cfg) {
  const log = (msg) => console.log(`ok   ${msg}`);
  const pageErrors = [];
  let rejectOnPageError;
  const pageFailed = new Promise((_, reject) => (rejectOnPageError = reject));
  pageFailed.catch(() => {});

  console.log(`launching ${cfg.chromium}`);
  const browser = await chromium.launch({
    executablePath: cfg.chromium,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: cfg.timeoutMs,
  });
  let page;
  try {
    const context = await browser.newContext({
      viewport: { width: 1440, height: 900 },
    });
    page = await context.newPage();
    page.setDefaultTimeout(cfg.timeoutMs);
    page.on('console', (msg) => {
      if (msg.type() !== 'error') return;
      const loc = msg.location();
      const where = loc.url ? ` (${loc.url}${loc.lineNumber ? `:${loc.lineNumber}` : ''})` : '';
      const e = `console error: ${msg.text()}${where}`;
      pageErrors.push(e);
      rejectOnPageError(new CheckFailed(`the page logged an error: ${e}`));
    });
    page.on('pageerror', (err) => {
      const e = `uncaught exception: ${err.message}`;
      pageErrors.push(e);
      rejectOnPageError(new CheckFailed(`the page threw: ${err.stack || err.message}`));
    });
    page.on('crash', () => rejectOnPageError(new CheckFailed('the page crashed')));

    /** wait runs fn(arg) in the page until it is truthy, failing with what on timeout or on a page error. */
    const wait = async (what, fn, arg) => {
      try {
        return await Promise.race([
          page.waitForFunction(fn, arg, { timeout: cfg.timeoutMs, polling: 250 }).then((h) => h.jsonValue()),
          pageFailed,
        ]);
      } catch (err) {
        if (err instanceof CheckFailed) throw err;
        const banner = await bannerText(page);
        throw new CheckFailed(
          `timed out after ${cfg.timeoutMs / 1000}s waiting until ${what}` +
            (banner ? `; the page shows the error banner: ${banner}` : '') +
            ` (at ${page.url()})`,
        );
      }
    };
    const click = async (what, selector) => {
      try {
        await Promise.race([page.locator(selector).first().click({ timeout: cfg.timeoutMs }), pageFailed]);
      } catch (err) {
        if (err instanceof CheckFailed) throw err;
        throw new CheckFailed(`cannot click ${what} (${selector}): ${err.message.split('\n')[0]}`);
      }
    };

    // 1. Overview.
    const overviewURL = `${cfg.url}#/`;
    try {
      await Promise.race([page.goto(overviewURL, { waitUntil: 'load', timeout: cfg.timeoutMs }), pageFailed]);
    } catch (err) {
      if (err instanceof CheckFailed) throw err;
      throw new CheckFailed(`cannot open ${overviewURL}: ${err.message.split('\n')[0]}`);
    }
    const nsRow = `[data-testid="ns-row"]${attr('data-name', cfg.namespace)}`;
    let nsCount;
    try {
      nsCount = await wait(
        `the overview lists namespace ${cfg.namespace}`,
        (sel) => document.querySelector(sel) && document.querySelectorAll('[data-testid="ns-row"]').length,
        nsRow,
      );
    } catch (err) {
      if (!err.message.startsWith('timed out')) throw err;
      const shown = await page
        .$$eval('[data-testid="ns-row"]', (rows) => rows.map((r) => r.dataset.name))
        .catch(() => []);
      throw new CheckFailed(`${err.message}; shown: ${shown.join(', ') || 'none'}`);
    }
    log(`overview lists namespace ${cfg.namespace} (${nsCount} namespaces)`);

    // 2. Namespace page, reached by its link.
    await click(`the link of namespace ${cfg.namespace}`, `${nsRow} a`);
    await wait(
      `the page is the one of namespace ${cfg.namespace}`,
      (ns) => location.hash === `#/ns/${encodeURIComponent(ns)}`,
      cfg.namespace,
    );
    const missingDeploys = (names) =>
      names.filter((n) => !document.querySelector(`[data-testid="deploy-row"][data-name=${JSON.stringify(n)}]`));
    try {
      await wait(
        `the namespace page lists deployments ${cfg.deployments.join(', ')}`,
        (names) =>
          names.every((n) => document.querySelector(`[data-testid="deploy-row"][data-name=${JSON.stringify(n)}]`)),
        cfg.deployments,
      );
    } catch (err) {
      if (!err.message.startsWith('timed out')) throw err;
      const missing = await page.evaluate(missingDeploys, cfg.deployments).catch(() => cfg.deployments);
      const shown = await page
        .$$eval('[data-testid="deploy-row"]', (rows) => rows.map((r) => r.dataset.name))
        .catch(() => []);
      throw new CheckFailed(`${err.message}; missing: ${missing.join(', ')}; shown: ${shown.join(', ') || 'none'}`);
    }
    log(`namespace page lists deployments ${cfg.deployments.join(', ')}`);
    const graph = await wait(
      'the service graph draws at least one edge',
      (ns) => {
        const g = document.querySelector('[data-testid="graph"]');
        const edges = document.querySelectorAll('[data-testid="graph-edge"]');
        if (!g || edges.length === 0) return null;
        const end = (e, side) => {
          const other = e.dataset[`${side}Namespace`];
          return `${e.dataset[side]}${other && other !== ns ? `.${other}` : ''}`;
        };
        return {
          nodes: document.querySelectorAll('[data-testid="graph-node"]').length,
          edges: [...edges].map(
            (e) => `${end(e, 'src')}->${end(e, 'dst')} (${e.dataset.mtls === 'true' ? 'mTLS' : 'plain'})`,
          ),
        };
      },
      cfg.namespace,
    );
    log(`service graph draws ${graph.nodes} nodes and ${graph.edges.length} edges: ${graph.edges.join(', ')}`);
    await screenshot(page, sibling(cfg.screenshot, 'namespace'));

    // 3. Workload page, reached by the deployment's link.
    const deployRow = `[data-testid="deploy-row"]${attr('data-name', cfg.workload)}`;
    await click(`the link of deployment ${cfg.workload}`, `${deployRow} a`);
    const first = await wait(`the RPS chart of deploy/${cfg.workload} has points`, () => {
      const c = document.querySelector('[data-testid="chart-rps"]');
      const points = Number(c?.dataset.points ?? 0);
      return points > 0 ? { points, updates: Number(c.dataset.updates) } : null;
    });
    log(`RPS chart of deploy/${cfg.workload} drew ${first.points} points (update ${first.updates})`);
    const later = await wait(
      `the RPS chart redraws new data twice (data-updates from ${first.updates} to ${first.updates + 2})`,
      (want) => {
        const c = document.querySelector('[data-testid="chart-rps"]');
        const updates = Number(c?.dataset.updates ?? 0);
        const points = Number(c?.dataset.points ?? 0);
        return updates >= want && points > 0 ? { updates, points } : null;
      },
      first.updates + 2,
    );
    log(`RPS chart updated live: data-updates ${first.updates} -> ${later.updates}, ${later.points} points`);
    const others = await page.$$eval('[data-testid^="chart-"]', (cs) =>
      cs.map((c) => `${c.dataset.testid}=${c.dataset.points}`),
    );
    log(`charts drawn: ${others.join(', ')}`);
    await wait(
      `the current stat row of deploy/${cfg.workload} shows`,
      (n) => document.querySelector(`[data-testid="workload-stat-row"][data-name=${JSON.stringify(n)}]`),
      cfg.workload,
    );
    log(`stat row of deploy/${cfg.workload} shows`);
    await screenshot(page, cfg.screenshot);

    // 4. Tap.
    if (cfg.tap) {
      await click('the Tap link of the header', '[data-nav="tap"]');
      await wait('the tap form shows', () => document.querySelector('[data-testid="tap-form"]'));
      await page.fill('[data-testid="tap-namespace"]', cfg.namespace);
      await page.fill('[data-testid="tap-resource"]', cfg.tap);
      await click('Start', '[data-testid="tap-start"]');
      const tapped = await wait(`a tap on ${cfg.tap} shows at least one event`, () => {
        const rows = document.querySelectorAll('[data-testid="tap-row"]');
        const state = document.querySelector('[data-testid="tap-status"]')?.dataset.state;
        if (state === 'error')
          return {
            error: document.querySelector('[data-testid="error-banner"]')?.textContent ?? 'tap failed',
          };
        return rows.length > 0 ? { rows: rows.length, first: rows[0].textContent } : null;
      });
      if (tapped.error) throw new CheckFailed(`tap on ${cfg.tap} failed: ${tapped.error}`);
      log(`tap on ${cfg.tap} shows ${tapped.rows} events`);
      await click('Stop', '[data-testid="tap-stop"]');
      await wait(
        'the tap stops',
        () => document.querySelector('[data-testid="tap-status"]')?.dataset.state === 'stopped',
      );
      log('tap stopped');
      await screenshot(page, sibling(cfg.screenshot, 'tap'));
    }

    // Let late errors surface, then make sure there was none.
    await page.waitForTimeout(500);
    if (pageErrors.length > 0) throw new CheckFailed(`the page logged errors:\n  ${pageErrors.join('\n  ')}`);
    log('no console error and no uncaught exception on the page');
  } catch (err) {
    if (page) {
      const banner = await bannerText(page);
      if (banner && err instanceof CheckFailed && !err.message.includes(banner)) {
        err.message += `\n     the page shows the error banner: ${banner}`;
      }
      await screenshot(page, cfg.screenshot).catch(() => {});
      console.error(`saved the page as it was to ${cfg.screenshot}`);
    }
    throw err;
  } finally {
    await browser.close().catch(() => {});
  }
}

async function screenshot(page, path) {
  await mkdir(dirname(path), { recursive: true });
  await page.screenshot({ path, fullPage: true, timeout: MAX_WAIT_S * 1000 });
  console.log(`     screenshot ${path}`);
}

async function bannerText(page) {
  try {
    return await page.evaluate(() => {
      const b = document.querySelector('[data-testid="error-banner"]');
      if (!b || b.hidden) return '';
      const items = [...b.querySelectorAll('li')].map((li) => li.textContent.trim());
      return items.length > 0 ? items.join('; ') : b.textContent.trim();
    });
  } catch {
    return '';
  }
}

async function main() {
  let cfg;
  try {
    cfg = parseFlags(process.argv.slice(2));
  } catch (err) {
    console.error(`check.mjs: ${err.message}`);
    console.error(
      'usage: node check.mjs --url URL --namespace NS --deployments a,b,c --screenshot out.png [--tap-resource deploy/X] [--workload NAME] [--timeout S]',
    );
    process.exit(2);
  }
  // Every wait has its own timeout; this catches a hang anywhere else
  // (a browser that never starts or never closes).
  const watchdog = setTimeout(() => {
    console.error(`FAIL the check did not finish within ${WATCHDOG_S}s`);
    process.exit(1);
  }, WATCHDOG_S * 1000);
  watchdog.unref();
  try {
    await run(cfg);
    console.log('PASS dashboard check');
  } catch (err) {
    console.error(`FAIL ${err instanceof CheckFailed ? err.message : err.stack || err.message}`);
    process.exit(1);
  }
}

await main();
