/**
 * The dashboard in a real browser: Debian's chromium, headless, driven by playwright-core,
 * against a real dev cluster (etcd, six cairnd, an NBD frontend) and `cairnctl api serve` run as
 * a process, signed in with tokens from `cairnctl token create`.
 *
 * What it checks: the login form (and a JSON 401 for other clients); `/?token=` trades the token
 * for an HttpOnly SameSite=Strict cookie and leaves the URL; every page renders with no console
 * error (a CSP violation would be one); the IO numbers change after an nbdcopy write without a
 * reload; an admin creates a volume through the form and its confirmation and `cairnctl volume
 * list` shows it; a viewer sees no action and a crafted POST is refused; a SIGKILLed storage node
 * turns its row and the verdict red within seconds, without a reload.
 *
 * Screenshots of the front page go to test-results/dashboard/ (printed). Skipped, saying why,
 * when /usr/bin/chromium is missing (make setup installs it).
 */
import { expect } from 'chai';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { freePort, waitFor } from '../../src/dev/index.js';
import { cairnctlPath, repoRoot } from '../harness/cli.js';
import { ClientProcess, runOk, seededBytes, useStack, type Stack } from '../harness/stack.js';

const chromiumPath = '/usr/bin/chromium';
const chromiumArgs = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
/** The API server reads etcd and starts its IO sampler before it prints its line. */
const apiStartDeadlineMs = 30_000;
/** A node's alive lease is 5 s; pages refresh every 2 s: red well within this. */
const nodeDownDeadlineMs = 30_000;
/** The frontend publishes its counters every few seconds and the API samples every 10 s. */
const ioDeadlineMs = 60_000;
const screenshotDir = join(repoRoot, 'test-results', 'dashboard');
const MiB = 1 << 20;

/** Why the browser tests cannot run here, or undefined. */
const chromiumMissing = existsSync(chromiumPath)
  ? undefined
  : `${chromiumPath} is missing (make setup installs Debian's chromium)`;

/** A computed CSS property of the first element `selector` matches. */
function styleOf(page: Page, selector: string, property: string): Promise<string> {
  return page
    .locator(selector)
    .first()
    .evaluate(
      (e, p) =>
        (globalThis as unknown as { getComputedStyle(e: unknown): Record<string, string> }).getComputedStyle(e)[p] ??
        '',
      property,
    );
}

describe('the dashboard in a real browser (chromium, playwright-core)', function () {
  this.timeout(300_000);
  if (chromiumMissing !== undefined) {
    it(`is skipped: ${chromiumMissing}`, function () {
      this.skip();
    });
    return;
  }
  let api: ClientProcess | undefined;
  let browser: BrowserContext | undefined;
  let userDataDir: string | undefined;
  let base = '';
  let adminToken = '';
  let viewerToken = '';
  const consoleErrors: string[] = [];

  // Registered before useStack's own after(), so the browser and the API server stop first.
  after(async function () {
    this.timeout(60_000);
    await browser?.close();
    browser = undefined;
    if (api !== undefined) {
      api.kill('SIGTERM');
      const done = await Promise.race([api.exit(), new Promise((r) => setTimeout(r, 15_000, 'overran'))]);
      if (done === 'overran') api.kill('SIGKILL');
      api = undefined;
    }
    if (userDataDir !== undefined) rmSync(userDataDir, { recursive: true, force: true });
  });

  const stack = useStack({ profile: '4+2', extentSize: '1MiB' });

  before(async function () {
    this.timeout(120_000);
    const s = stack();
    const port = await freePort();
    api = new ClientProcess(process.execPath, [cairnctlPath, 'api', 'serve', '--listen', `127.0.0.1:${port}`], {
      deadlineMs: 30 * 60_000,
      env: { CAIRN_ETCD: s.etcd },
    });
    const m = await api.waitForOutput(/serving on (https?:\/\/\S+)/, apiStartDeadlineMs);
    base = m[1] ?? '';
    const token = async (role: string) =>
      (
        await s.cairnctl(`token create --role ${role}`, ['token', 'create', '--role', role, '--name', `dash-${role}`])
      ).stdout
        .trim()
        .split('\n')
        .pop() ?? '';
    adminToken = await token('admin');
    viewerToken = await token('viewer');
    userDataDir = mkdtempSync(join(tmpdir(), 'cairn-chromium-'));
    browser = await chromium.launchPersistentContext(userDataDir, {
      executablePath: chromiumPath,
      headless: true,
      args: chromiumArgs,
      viewport: { width: 1280, height: 900 },
    });
    mkdirSync(screenshotDir, { recursive: true });
  });

  const newPage = async (): Promise<Page> => {
    if (browser === undefined) throw new Error('the browser did not start (before() failed?)');
    const page = await browser.newPage();
    page.on('console', (msg) => {
      if (msg.type() === 'error') consoleErrors.push(`${page.url()}: ${msg.text()}`);
    });
    page.on('pageerror', (err) => consoleErrors.push(`${page.url()}: ${err.message}`));
    return page;
  };

  const signIn = async (page: Page, token: string): Promise<void> => {
    await browser?.clearCookies();
    const res = await page.goto(`${base}/?token=${encodeURIComponent(token)}`);
    expect(res?.status(), 'the page after the redirect').to.equal(200);
    expect(page.url(), 'the token is gone from the address bar').to.equal(`${base}/`);
  };

  /** Marks the page's window; a reload would lose the mark. */
  const markWindow = (page: Page) => page.evaluate(() => ((globalThis as { cairnMark?: number }).cairnMark = 1));
  const stillMarked = (page: Page) => page.evaluate(() => (globalThis as { cairnMark?: number }).cairnMark === 1);

  const volumeNames = async (s: Stack): Promise<string[]> =>
    (
      JSON.parse((await s.cairnctl('volume list --json', ['volume', 'list', '--json'])).stdout) as { name: string }[]
    ).map((v) => v.name);

  it('shows a browser the login form and any other client a JSON 401', async () => {
    const page = await newPage();
    await browser?.clearCookies();
    const res = await page.goto(`${base}/volumes`);
    expect(res?.status()).to.equal(401);
    expect(await page.locator('form#login input[name="token"]').count()).to.equal(1);
    const csp = res?.headers()['content-security-policy'] ?? '';
    expect(csp).to.include("script-src 'self'").and.not.include('unsafe-inline');
    const json = await page.request.get(`${base}/`, { headers: { Accept: 'application/json' } });
    expect(json.status()).to.equal(401);
    expect(((await json.json()) as { error: { code: string } }).error.code).to.equal('EAUTH');
    // A wrong token gets the form again, with a message.
    await page.fill('input[name="token"]', 'cairn_000000000000_not-a-token');
    await page.click('form#login button[type="submit"]');
    expect(await page.locator('.notice.error').textContent()).to.match(/not accepted/);
    await page.close();
  });

  it('trades ?token= for an HttpOnly, SameSite=Strict session cookie and shows the front page', async () => {
    const page = await newPage();
    await signIn(page, adminToken);
    const cookies = (await browser?.cookies()) ?? [];
    expect(cookies.length, 'cookies set').to.be.greaterThan(0);
    for (const c of cookies) {
      expect(c.httpOnly, `${c.name} is HttpOnly`).to.equal(true);
      expect(c.sameSite, `${c.name} is SameSite=Strict`).to.equal('Strict');
    }
    expect(await page.locator('#verdict').getAttribute('data-state')).to.equal('healthy');
    expect(await page.locator('#nodes tbody tr').count()).to.equal(6);
    expect(await page.locator('#zones tbody tr').count()).to.equal(3);
    expect(await page.locator('svg#chart-iops').count()).to.equal(1);
    await waitFor('the live stream to deliver a first update', async () =>
      Number(await page.locator('body').getAttribute('data-live-updates')) >= 1 ? true : undefined,
    );
    // Rendered on the server (so it reads without JavaScript), with no inline script or style.
    const served = await (await page.request.get(`${base}/`, { headers: { Accept: 'text/html' } })).text();
    expect(served).to.include('id="verdict"').and.include('id="nodes"');
    expect(served).not.to.match(/<script(?![^>]*\bsrc=)|\sstyle=|\son[a-z]+=/i);
    const path = join(screenshotDir, 'front.png');
    await page.screenshot({ path, fullPage: true });
    console.log(`      screenshot of the front page: ${path}`);
    await page.close();
  });

  it('renders every page with no console error', async () => {
    const s = stack();
    await s.createVolume('pages', '16MiB');
    const file = s.path('pages.bin');
    writeFileSync(file, seededBytes('pages', 2 * MiB));
    await runOk('nbdcopy into pages', 'nbdcopy', ['--flush', file, s.uri('pages')]);
    await s.cairnctl('snapshot create', ['snapshot', 'create', 'pages', 'first']);
    await s.cairnctl('volume clone', ['volume', 'clone', 'pages@first', 'pages-clone']);
    const page = await newPage();
    await signIn(page, adminToken);
    const before = consoleErrors.length;
    for (const [path, heading] of [
      ['/volumes', 'Volumes'],
      ['/volumes/pages', 'Volume pages'],
      ['/nodes', 'Storage nodes'],
      ['/nodes/a-1', 'Node a-1'],
      ['/zones', 'Zones'],
      ['/policies', 'Policies'],
      ['/events', 'Events'],
    ] as const) {
      const res = await page.goto(`${base}${path}`);
      expect(res?.status(), path).to.equal(200);
      expect((await page.locator('h1').first().textContent())?.trim(), path).to.equal(heading);
    }
    await page.goto(`${base}/volumes/pages`);
    expect(await page.locator('#placement tbody tr').count(), 'one row per written extent').to.equal(2);
    expect(await page.locator('#placement tbody tr').first().locator('td.shard').count(), 'k + m cells').to.equal(6);
    expect(await page.locator('#snapshots [data-snapshot="first"] a').textContent()).to.equal('pages-clone');
    expect(consoleErrors.slice(before), 'console errors').to.deep.equal([]);
    // (chromium logs a 404 as a console error itself, so this comes after the check.)
    const missing = await page.goto(`${base}/volumes/no-such-volume`);
    expect(missing?.status()).to.equal(404);
    expect(await page.locator('.notice.error').textContent()).to.match(/no-such-volume/);
    await page.close();
  });

  it('changes the IO numbers after a write through the frontend, without a reload', async () => {
    const s = stack();
    await s.createVolume('live', '64MiB');
    const page = await newPage();
    await signIn(page, adminToken);
    await markWindow(page);
    const writes = async () => Number(await page.locator('#io-write-ops').getAttribute('data-value'));
    const before = await writes();
    const file = s.path('live.bin');
    writeFileSync(file, seededBytes('live', 8 * MiB));
    await runOk('nbdcopy into live', 'nbdcopy', ['--flush', file, s.uri('live')]);
    const after = await waitFor(
      'the front page to count the writes (frontend counters -> API sample every 10 s -> live region)',
      async () => {
        const n = await writes();
        return n > before ? n : undefined;
      },
      ioDeadlineMs,
      { intervalMs: 250 },
    );
    expect(after).to.be.greaterThan(before);
    expect(await stillMarked(page), 'the page was not reloaded').to.equal(true);
    expect(Number(await page.locator('svg#chart-iops').getAttribute('data-points'))).to.be.greaterThan(0);
    await page.close();
  });

  it('lets an admin create a volume through the form and its confirmation', async () => {
    const s = stack();
    const page = await newPage();
    await signIn(page, adminToken);
    await page.goto(`${base}/volumes`);
    const form = page.locator('form[data-action="volume-create"]');
    await form.locator('input[name="name"]').fill('from-browser');
    await form.locator('input[name="size"]').fill('16MiB');
    await form.locator('button[type="submit"]').click();
    expect(await page.locator('#confirm').textContent()).to.match(/Create volume\s+from-browser\s+of\s+16 MiB/);
    expect(await volumeNames(s), 'nothing happens before the confirmation').not.to.include('from-browser');
    await page.click('#confirm-button');
    expect(new URL(page.url()).pathname).to.equal('/volumes/from-browser');
    expect(await page.locator('.notice').first().textContent()).to.match(/Created volume\s+from-browser/);
    expect(await volumeNames(s)).to.include('from-browser');
    // A forged POST (no form token) is refused, whatever the role.
    const forged = await page.request.post(`${base}/act/volume-delete`, {
      form: { volume: 'from-browser', confirm: 'yes' },
    });
    expect(forged.status()).to.equal(403);
    expect(await volumeNames(s)).to.include('from-browser');
    await page.close();
  });

  it('shows a viewer no action, and refuses a viewer’s crafted POST (403 from the API)', async () => {
    const s = stack();
    const page = await newPage();
    await signIn(page, viewerToken);
    expect(await page.locator('#who').getAttribute('data-role')).to.equal('viewer');
    for (const path of ['/', '/volumes', '/volumes/live', '/nodes', '/nodes/a-1']) {
      await page.goto(`${base}${path}`);
      expect(await page.locator('form.action').count(), `action forms on ${path}`).to.equal(0);
    }
    // A well-formed form (the viewer's own form token, from this origin) still cannot act.
    const answer = await page.evaluate(async () => {
      const doc = (globalThis as unknown as { document: { querySelector(s: string): { value: string } | null } })
        .document;
      const csrf = doc.querySelector('input[name="csrf"]')?.value ?? '';
      const post = (path: string, fields: Record<string, string>) =>
        fetch(path, { method: 'POST', body: new URLSearchParams({ csrf, ...fields }) }).then((r) => r.status);
      return {
        confirmed: await post('/act/volume-create', { name: 'by-viewer', size: '1MiB', confirm: 'yes' }),
        first: await post('/act/volume-create', { name: 'by-viewer', size: '1MiB' }),
        api: await fetch('/api/v1/volumes', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ name: 'by-viewer', size: '1MiB' }),
        }).then((r) => r.status),
      };
    });
    expect(answer).to.deep.equal({ confirmed: 403, first: 403, api: 403 });
    expect(await volumeNames(s)).not.to.include('by-viewer');
    await page.close();
  });

  it('turns a SIGKILLed node’s row and the verdict red within seconds, without a reload; then a repair pass', async () => {
    const s = stack();
    const page = await newPage();
    await signIn(page, adminToken);
    // 'live' has 8 written extents of 4+2 over six nodes: every node holds shards of it.
    expect(await page.locator('#verdict').getAttribute('data-tone')).to.equal('ok');
    await markWindow(page);
    const started = Date.now();
    await s.killNode('b-1');
    await waitFor(
      'node b-1 to show down and the verdict red',
      async () => {
        const row = await page.locator('#node-b-1').getAttribute('data-state');
        const verdict = await page.locator('#verdict').getAttribute('data-tone');
        return row === 'down' && verdict === 'bad' ? true : undefined;
      },
      nodeDownDeadlineMs,
      { intervalMs: 200 },
    );
    const seconds = (Date.now() - started) / 1000;
    console.log(`      b-1 and the verdict turned red ${seconds.toFixed(1)} s after SIGKILL`);
    expect(await stillMarked(page), 'the page was not reloaded').to.equal(true);
    const red = 'rgb(198, 40, 40)';
    expect(await styleOf(page, '#node-b-1 .state', 'color')).to.equal(red);
    expect(await styleOf(page, '#verdict', 'backgroundColor')).to.equal(red);
    const path = join(screenshotDir, 'front-node-down.png');
    await page.screenshot({ path, fullPage: true });
    console.log(`      screenshot with b-1 down: ${path}`);
    // The placement picture marks b-1's shards of 'live' missing (8 extents, one shard each on b-1).
    await page.goto(`${base}/volumes/live`);
    expect(await page.locator('#placement td.shard[data-state="missing"]').count()).to.equal(8);
    expect(Number(await page.locator('#missing-shards').textContent())).to.equal(8);
    await page.screenshot({ path: join(screenshotDir, 'volume-node-down.png'), fullPage: true });
    // A second action end to end: a repair pass, confirmed, shows up as a job of the API server.
    await page.goto(`${base}/`);
    await page.locator('form[data-action="repair-start"] button[type="submit"]').click();
    expect(await page.locator('#confirm').textContent()).to.match(/repair pass/);
    await page.click('#confirm-button');
    expect(await page.locator('.notice').first().textContent()).to.match(/Started a repair pass/);
    expect(await page.locator('#jobs tbody tr').first().textContent()).to.match(/repair/);
    await page.close();
  });

  it('left nothing in the server log about a failed page or live update', () => {
    expect(api?.stderr() ?? '').not.to.match(/dashboard request failed|live update failed|internal error/);
  });
});
