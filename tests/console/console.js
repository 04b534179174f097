// Drives Debian's chromium (headless, through playwright-core) through the
// console of a running mixpanel-actions server, for tests/console.rs.
//
// Environment: CONSOLE_BASE (the server's base URL), ADMIN_TOKEN, DESTINATION,
// WRITE_KEY, SECRETS (JSON array of strings that must never be on a page),
// OFF_BASE (a server without admin_token), SCREENSHOTS (a directory), CHROMIUM
// (the browser binary). Prints one JSON object with what it saw; exits non-zero
// on the first failed expectation. Refuses any host but loopback.
'use strict';

const { chromium } = require('playwright-core');
const path = require('path');

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error('missing environment variable ' + k);
  return v;
};
const BASE = env('CONSOLE_BASE');
const OFF_BASE = env('OFF_BASE');
const TOKEN = env('ADMIN_TOKEN');
const DEST = env('DESTINATION');
const WRITE_KEY = env('WRITE_KEY');
const SECRETS = JSON.parse(env('SECRETS'));
const SHOTS = env('SCREENSHOTS');
const BURST = 40;
const STEP_TIMEOUT = 15000;

for (const base of [BASE, OFF_BASE]) {
  if (!/^http:\/\/127\.0\.0\.1:\d+$/.test(base)) throw new Error('not a loopback URL: ' + base);
}

const seen = {};
function expect(cond, what) {
  if (!cond) {
    console.log(JSON.stringify({ failed: what, seen }));
    throw new Error('expectation failed: ' + what);
  }
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, name + '.png'), fullPage: true });
}

async function noSecrets(page, where) {
  const text = await page.evaluate(() => document.documentElement.innerText + '\n' + document.documentElement.outerHTML
    + '\n' + [...document.querySelectorAll('input, textarea')].map((e) => e.value).join('\n'));
  for (const s of SECRETS) expect(!text.includes(s), where + ': the page shows a secret (' + s.length + ' characters)');
}

async function counter(page, name) {
  const t = await page.locator(`.o-dest[data-destination="${DEST}"] [data-counter="${name}"] b`).textContent();
  return Number(t);
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
    // Nothing but the servers under test.
    await context.route('**/*', (route) => {
      const u = new URL(route.request().url());
      if (u.hostname === '127.0.0.1') return route.continue();
      seen.blocked = (seen.blocked || []).concat(u.origin);
      return route.abort();
    });
    const page = await context.newPage();
    page.setDefaultTimeout(STEP_TIMEOUT);
    const consoleErrors = [];
    page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
    page.on('pageerror', (e) => consoleErrors.push(String(e)));
    page.on('dialog', (d) => { seen.dialogs = (seen.dialogs || []).concat(d.message()); d.accept(); });

    // 1. A wrong token is refused.
    const response = await page.goto(BASE + '/console/');
    seen.csp = response.headers()['content-security-policy'];
    expect(seen.csp && seen.csp.includes("default-src 'self'"), 'a strict CSP header');
    await page.locator('#login').waitFor();
    await shot(page, '01-login');
    await page.fill('#token', 'not-the-admin-token-at-all');
    await page.click('#login-form button[type=submit]');
    await page.locator('#login-error', { hasText: 'refused' }).waitFor();
    expect(await page.locator('#nav').isHidden(), 'no pages after a wrong token');
    seen.wrong_token = await page.locator('#login-error').textContent();
    await shot(page, '02-wrong-token');

    // 2. The right token: the event tester.
    await page.fill('#token', TOKEN);
    await page.click('#login-form button[type=submit]');
    await page.locator('#tester').waitFor();
    expect(await page.evaluate(() => sessionStorage.length) === 1, 'the token is in sessionStorage');
    expect(!page.url().includes(TOKEN), 'the token is not in the URL');

    // 3. An identify event: two requests, masked.
    await page.selectOption('#t-dest', DEST);
    await page.selectOption('#t-sample', 'identify');
    await page.click('#t-test');
    await page.locator('#t-matched').waitFor();
    const requests = page.locator('.t-request');
    seen.tested_requests = await requests.count();
    seen.tested_urls = await page.locator('.t-url').allTextContents();
    seen.matched = await page.locator('#t-matched li').allTextContents();
    expect(seen.tested_requests === 2, 'an identify event shows two requests');
    await noSecrets(page, 'event tester');
    await shot(page, '03-tester-identify');

    // 3b. An event the action refuses: the reference's message, nothing to send.
    await page.fill('#t-event', JSON.stringify({ type: 'track', userId: 'user-1', properties: { plan: 'pro' } }));
    await page.click('#t-test');
    await page.locator('.t-error').first().waitFor();
    seen.validation_error = await page.locator('.t-error').first().innerText();
    seen.validation_requests = await page.locator('.t-request').count();
    await shot(page, '03b-tester-validation-error');
    await page.selectOption('#t-sample', 'track');
    await page.selectOption('#t-sample', 'identify');
    await page.click('#t-test');
    await page.locator('.t-request').nth(1).waitFor();

    // 4. Send for real: Mixpanel's answer per request.
    await page.click('#t-send');
    await page.locator('#t-sent-status').waitFor();
    seen.sent_status = await page.locator('#t-sent-status').textContent();
    seen.sent_answers = await page.locator('.t-answer').count();
    seen.sent_bodies = await page.locator('.t-answer-body').allTextContents();
    seen.sent_labels = await page.locator('.t-answer > p:first-child b').allTextContents();
    expect(seen.sent_status.startsWith('Delivered'), 'sent for real and delivered');
    await noSecrets(page, 'send for real');
    await shot(page, '04-tester-sent');

    // 5. The overview's counters move after a burst.
    await page.click('#nav a[data-page=overview]');
    await page.selectOption('#o-window', '10m');
    await page.locator(`.o-dest[data-destination="${DEST}"]`).waitFor();
    const before = await counter(page, 'received');
    const deliveredBefore = await counter(page, 'delivered');
    const batch = [];
    for (let i = 0; i < BURST; i++) batch.push({ type: 'track', userId: 'burst-' + i, event: 'Burst', messageId: 'burst-' + i });
    const sent = await fetch(BASE + '/v1/batch', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Basic ' + Buffer.from(WRITE_KEY + ':').toString('base64') },
      body: JSON.stringify({ batch }),
    });
    expect(sent.status === 200, 'the burst is accepted');
    const deadline = Date.now() + STEP_TIMEOUT;
    let after = before;
    let deliveredAfter = deliveredBefore;
    while (Date.now() < deadline && (after < before + BURST || deliveredAfter < deliveredBefore + BURST)) {
      await page.click('#o-refresh');
      await page.waitForTimeout(300);
      after = await counter(page, 'received');
      deliveredAfter = await counter(page, 'delivered');
    }
    seen.overview = { before, after, deliveredBefore, deliveredAfter };
    expect(after >= before + BURST, 'received moved by the burst');
    expect(deliveredAfter >= deliveredBefore + BURST, 'delivered moved by the burst');
    await shot(page, '05-overview');

    // 6. Dead letters: find, inspect, replay one, purge the other.
    await page.click('#nav a[data-page=dead]');
    await page.selectOption('#d-reason', 'rejected');
    await page.click('#d-filter button[type=submit]');
    await page.locator('#d-list tbody tr').first().waitFor();
    const rows = page.locator('#d-list tbody tr');
    seen.dead_rows = await rows.count();
    expect(seen.dead_rows === 2, 'two dead letters listed');
    const ids = await rows.evaluateAll((trs) => trs.map((t) => Number(t.dataset.id)));
    seen.dead_ids = ids;
    await rows.first().locator('button.link').click();
    await page.locator('#d-letter').waitFor();
    seen.dead_detail = await page.locator('#d-letter').innerText();
    expect(seen.dead_detail.includes('Response from Mixpanel'), 'the detail shows Mixpanel\'s answer');
    expect(seen.dead_detail.includes('You sent'), 'the detail shows the event');
    await noSecrets(page, 'dead letter');
    await shot(page, '06-dead-letter');
    await page.check(`#d-list tr[data-id="${ids[0]}"] .d-pick`);
    await page.click('#d-replay-sel');
    await page.locator('#status', { hasText: 'Replayed 1' }).waitFor();
    await page.locator(`#d-list tr[data-id="${ids[0]}"]`).waitFor({ state: 'detached' });
    await page.check(`#d-list tr[data-id="${ids[1]}"] .d-pick`);
    await page.click('#d-purge-sel');
    await page.locator('#status', { hasText: 'Purged 1' }).waitFor();
    await page.locator('#d-list', { hasText: 'No dead letters match' }).waitFor();
    await shot(page, '07-dead-letters-done');

    // 7. Configuration: credentials checked at start and on demand; no secret.
    await page.click('#nav a[data-page=config]');
    await page.locator(`.c-dest[data-destination="${DEST}"] .c-cred`).waitFor();
    seen.credentials_at_start = await page.locator(`.c-dest[data-destination="${DEST}"] .c-cred`).textContent();
    await page.click('#c-check');
    await page.locator('#status', { hasText: 'Credentials checked' }).waitFor();
    seen.credentials = await page.locator(`.c-dest[data-destination="${DEST}"] .c-cred`).textContent();
    seen.config_text = await page.locator('#c-result').innerText();
    await noSecrets(page, 'configuration');
    await shot(page, '08-configuration');

    // 8. Sign out, then a server without admin_token says one is needed.
    await page.click('#signout');
    await page.locator('#login').waitFor();
    expect(await page.evaluate(() => sessionStorage.length) === 0, 'signing out forgets the token');
    await page.goto(OFF_BASE + '/console/');
    await page.locator('#admin-off').waitFor();
    seen.admin_off = await page.locator('#admin-off').innerText();
    await shot(page, '09-admin-off');

    // 9. The dark theme (the system's choice), on the overview.
    const dark = await browser.newContext({ viewport: { width: 1200, height: 900 }, colorScheme: 'dark' });
    await dark.route('**/*', (route) => (new URL(route.request().url()).hostname === '127.0.0.1' ? route.continue() : route.abort()));
    const night = await dark.newPage();
    night.setDefaultTimeout(STEP_TIMEOUT);
    await night.goto(BASE + '/console/#overview');
    await night.fill('#token', TOKEN);
    await night.click('#login-form button[type=submit]');
    await night.locator(`.o-dest[data-destination="${DEST}"]`).waitFor();
    seen.dark_background = await night.evaluate(() => getComputedStyle(document.body).backgroundColor);
    await shot(night, '10-overview-dark');
    await dark.close();

    seen.console_errors = consoleErrors.filter((e) => !e.includes('401') && !e.includes('404'));
    expect(seen.console_errors.length === 0, 'no script errors on the pages');
    console.log(JSON.stringify({ ok: true, seen }));
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error(String(e && e.stack ? e.stack : e));
  process.exit(1);
});
