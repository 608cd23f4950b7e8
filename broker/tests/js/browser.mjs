// Opens the page given as the first argument in headless Chromium (the
// system's /usr/bin/chromium, or $TERN_CHROMIUM; never a downloaded one),
// driven by playwright-core, with a fresh profile directory. Waits for the
// page to set window.ternResult and prints it as one line of JSON; the
// page's console goes to stderr. Exits 1 if Chromium is missing or the page
// gives no result. Run by broker/tests/websocket_js.rs.
import { chromium } from 'playwright-core';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [pageUrl] = process.argv.slice(2);
const executablePath = process.env.TERN_CHROMIUM || '/usr/bin/chromium';
if (!existsSync(executablePath)) {
  console.error(`Chromium not found at ${executablePath} (apt-get install chromium)`);
  process.exit(1);
}
const profile = mkdtempSync(join(tmpdir(), 'tern-chromium-'));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('console', (m) => console.error(`[page] ${m.text()}`));
  page.on('pageerror', (e) => console.error(`[page error] ${e}`));
  await page.goto(pageUrl);
  await page.waitForFunction(() => window.ternResult !== undefined, null, { timeout: 60_000 });
  const result = await page.evaluate(() => window.ternResult);
  console.log(JSON.stringify(result));
} catch (e) {
  console.error(`browser run failed: ${e}`);
  process.exitCode = 1;
} finally {
  if (context) await context.close();
  rmSync(profile, { recursive: true, force: true });
}
