// Drives the dashboard in headless Chromium (Debian's /usr/bin/chromium, playwright-core from
// package.json). Run by tests/tests/dashboard.rs against a whole local town:
//   GASTOWN_KEY=<internal key> node tests/browser/dashboard.mjs <worker url> <town id> <town name> <rig id> <sling body> <screenshot> <mayor message> <mayor reply>
// Prints `SAW <what>` lines as it goes (the Rust test releases the scripted agent's gate on
// `SAW tool_call`) and `OK` at the end; exits non-zero with the reason on any failure. Every wait
// is bounded.
import { chromium } from 'playwright-core';

const [url, town, townName, rig, slingBody, screenshot, mayorMessage, mayorReply] = process.argv.slice(2);
const key = process.env.GASTOWN_KEY;
if (!url || !town || !rig || !screenshot || !mayorMessage || !mayorReply || !key) {
  console.error('usage: GASTOWN_KEY=... node dashboard.mjs <url> <town> <town name> <rig> <sling body> <screenshot> <mayor message> <mayor reply>');
  process.exit(2);
}
const STEP = 30_000;
const WORK = 300_000;
const saw = (what) => console.log('SAW ' + what);

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox'] });
const page = await browser.newPage({ viewport: { width: 1400, height: 1600 } });
const external = [];
page.on('request', (r) => { if (!r.url().startsWith(url)) external.push(r.url()); });
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(String(e)));
try {
  await page.goto(url + '/', { timeout: STEP });
  const title = await page.title();
  if (title !== 'Gastown Dashboard') throw new Error('title is ' + JSON.stringify(title));
  saw('page');

  // A wrong key: a clear error in the page.
  await page.fill('#key', 'not-the-key');
  await page.click('#key-save');
  await page.waitForFunction(() => document.querySelector('#error').textContent.includes('refused (401)'), null, { timeout: STEP });
  saw('bad key refused: ' + (await page.textContent('#error')));

  // The right key: the towns are listed, the one made through the API among them.
  await page.fill('#key', key);
  await page.click('#key-save');
  await page.waitForSelector(`#towns button[data-town="${town}"]`, { timeout: STEP });
  await page.click(`#towns button[data-town="${town}"]`);
  await page.waitForFunction((n) => document.querySelector('#town-name-shown')?.textContent === n, townName, { timeout: STEP });
  await page.waitForSelector(`#rigs tr[data-rig="${rig}"]`, { timeout: STEP });
  if ((await page.textContent('#error')).trim() !== '') throw new Error('error shown with the right key: ' + (await page.textContent('#error')));
  if (await page.evaluate(() => document.documentElement.outerHTML.includes(sessionStorage.getItem('gastown_internal_key')))) {
    throw new Error('the key shows in the page');
  }
  saw('town and rig');

  // Sling through the form; record every status the bead shows in the page.
  await page.fill('#sling-title', 'Dashboard bead');
  await page.fill('#sling-body', slingBody);
  await page.click('#sling-submit');
  await page.waitForFunction(() => document.querySelector('#sling-result').dataset.bead, null, { timeout: STEP });
  const bead = await page.getAttribute('#sling-result', 'data-bead');
  const agent = await page.getAttribute('#sling-result', 'data-agent');
  saw('slung ' + bead + ' to ' + agent);
  await page.evaluate((b) => {
    window.__seen = [];
    const note = () => {
      const el = document.querySelector(`.bead[data-bead="${b}"]`);
      const s = el && el.dataset.status;
      if (s && window.__seen[window.__seen.length - 1] !== s) window.__seen.push(s);
    };
    note();
    new MutationObserver(note).observe(document.querySelector('#beads'), { childList: true, subtree: true });
  }, bead);
  await page.waitForSelector(`.bead[data-bead="${bead}"][data-status="in_progress"]`, { timeout: WORK });
  saw('in_progress');

  // The agent's live stream: its tool call shows while the agent waits in it.
  await page.waitForSelector(`#agents tr[data-agent="${agent}"]`, { timeout: STEP });
  await page.click(`#agents tr[data-agent="${agent}"]`);
  await page.waitForFunction(() => /tool bash \[running\].*dashboard-gate/.test(document.querySelector('#stream-log').textContent), null, { timeout: WORK });
  saw('tool_call');
  // Released by the test: the call completes with its output, the run ends, the stream closes.
  await page.waitForFunction(() => document.querySelector('#stream-log').textContent.includes('released-42'), null, { timeout: WORK });
  saw('tool output');
  await page.waitForFunction(() => document.querySelector('#stream-state').textContent.startsWith('stream ended'), null, { timeout: WORK });
  saw('stream ended: ' + (await page.textContent('#stream-state')));
  // The run's own usage, summed from its stream (the scripted model has no price).
  const runUsage = await page.textContent('#stream-usage');
  if (!/^· this run: [1-9]\d* calls, [1-9]\d* tokens, cost unknown$/.test(runUsage)) throw new Error('run usage: ' + runUsage);
  saw('run usage: ' + runUsage);

  await page.waitForSelector(`.bead[data-bead="${bead}"][data-status="closed"]`, { timeout: WORK });
  // The town's shards: the rig on shard 0, the one shard listed.
  await page.waitForFunction((r) => document.querySelector(`#rigs tr[data-rig="${r}"] .rig-shard`)?.textContent === '0'
    && document.querySelectorAll('#shards tr[data-shard]').length === 1 && document.querySelector('#shards tr[data-shard="0"]'), rig, { timeout: STEP });
  saw('shards: ' + (await page.textContent('#shards tbody')));
  const seen = await page.evaluate(() => window.__seen);
  saw('closed after ' + seen.join(' -> '));
  if (seen.indexOf('in_progress') < 0 || seen.indexOf('in_progress') > seen.indexOf('closed')) throw new Error('bead states in the page: ' + seen.join(' -> '));
  await page.waitForFunction(() => [...document.querySelectorAll('#reviews .badge')].some((b) => b.textContent === 'merged'), null, { timeout: STEP });
  saw('merged');
  await page.waitForSelector('#reviews a[href="https://forge.test/org/app/pull/5"]', { timeout: STEP });
  saw('pull request linked');
  // The usage panel: the run's model calls, today's bar, the bead among the top beads (the
  // scripted model has no price: its cost shows as unknown).
  await page.waitForSelector(`#usage-beads tr[data-bead="${bead}"]`, { timeout: STEP });
  const usage = await page.evaluate((b) => ({
    total: document.querySelector('#usage-total').textContent,
    bars: [...document.querySelectorAll('#usage-days .bar')].map((x) => Number(x.dataset.tokens)),
    row: document.querySelector(`#usage-beads tr[data-bead="${b}"]`).textContent,
  }), bead);
  if (!/^[1-9]\d* calls, [1-9]\d* tokens, unknown/.test(usage.total) || !usage.bars.some((n) => n > 0) || !usage.row.includes('unknown')) {
    throw new Error('usage panel: ' + JSON.stringify(usage));
  }
  saw('usage: ' + usage.total);
  await page.waitForFunction((b) => /tokens, unknown/.test((document.querySelector(`.bead[data-bead="${b}"] .bead-usage`) || {}).textContent || ''), bead, { timeout: STEP });
  saw('bead usage: ' + (await page.textContent(`.bead[data-bead="${bead}"] .bead-usage`)));

  // The mayor panel: a blank message is refused in the page; a message goes out with the
  // session's status shown, then shows in the transcript as text (it holds markup, which must
  // not become elements), followed by the scripted mayor's reply; the mayor's live stream opens
  // from the panel and shows that reply too.
  await page.click('#mayor-send');
  await page.waitForFunction(() => document.querySelector('#mayor-error').textContent.includes('Type a message'), null, { timeout: STEP });
  saw('mayor blank refused: ' + (await page.textContent('#mayor-error')));
  await page.fill('#mayor-input', mayorMessage);
  await page.press('#mayor-input', 'Enter');
  await page.waitForFunction(() => document.querySelector('#mayor-sent').dataset.sessionStatus || document.querySelector('#mayor-error').textContent.startsWith('Not sent'), null, { timeout: STEP });
  const notSent = await page.textContent('#mayor-error');
  if (notSent.startsWith('Not sent')) throw new Error('the mayor panel says: ' + notSent);
  const sentStatus = await page.getAttribute('#mayor-sent', 'data-session-status');
  if (!['active', 'starting', 'queued'].includes(sentStatus)) throw new Error('session status ' + sentStatus);
  if ((await page.inputValue('#mayor-input')) !== '') throw new Error('the text box was not emptied after sending');
  saw('mayor sent: ' + (await page.textContent('#mayor-sent')));
  const shown = (role, text) => page.waitForFunction(([r, t]) => [...document.querySelectorAll(`#mayor-log .msg[data-role="${r}"] .text`)].some((e) => e.textContent === t), [role, text], { timeout: WORK });
  await shown('person', mayorMessage);
  saw('mayor person message');
  await shown('mayor', mayorReply);
  const transcript = await page.$$eval('#mayor-log .msg', (ms) => ms.map((m) => [m.dataset.role, Number(m.dataset.id), m.querySelector('.text').textContent]));
  if (transcript.length !== 2 || transcript[0][0] !== 'person' || transcript[1][0] !== 'mayor' || !(transcript[0][1] < transcript[1][1])) {
    throw new Error('transcript ' + JSON.stringify(transcript));
  }
  if ((await page.$$('#mayor-log i, #mayor-log b, #mayor-log script')).length) throw new Error('message text was parsed as HTML');
  saw('mayor reply: ' + transcript[1][2]);
  await page.click('#mayor-stream');
  await page.waitForFunction((t) => document.querySelector('#stream-agent').textContent === 'mayor' && document.querySelector('#stream-log').textContent.includes(t), mayorReply, { timeout: STEP });
  saw('mayor stream: ' + (await page.textContent('#stream-state')));
  if (external.length) throw new Error('requests outside the Worker: ' + external.join(', '));
  if (pageErrors.length) throw new Error('page errors: ' + pageErrors.join('; '));
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log('OK');
} catch (e) {
  console.error('FAILED: ' + (e && e.message ? e.message : e));
  try { await page.screenshot({ path: screenshot.replace(/\.png$/, '-failed.png'), fullPage: true }); } catch (_) { /* best effort */ }
  process.exitCode = 1;
} finally {
  await browser.close();
}
