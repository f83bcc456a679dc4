// Loads tidegate's demo page in headless Chromium, publishes over HTTP, and
// prints what the page shows (JSON on stdout) for the Python test to check.
//   node page_test.js PORT CHANNEL COUNT
'use strict';
const { chromium } = require('playwright-core');

async function main() {
  const [port, channel, count] = [process.argv[2], process.argv[3], Number(process.argv[4])];
  const base = `http://127.0.0.1:${port}`;
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await browser.newPage();
    await page.goto(`${base}/?ch=${channel}`);
    await page.waitForFunction(() =>
      document.getElementById('sse-state').textContent === 'subscribed' &&
      document.getElementById('ws-state').textContent === 'subscribed', null, { timeout: 15000 });
    const sent = [];
    for (let i = 0; i < count; i++) {
      const r = await fetch(`${base}/pub/${channel}`, { method: 'POST', body: JSON.stringify({ n: i }) });
      sent.push((await r.json()).pos);
    }
    await page.waitForFunction((n) =>
      document.querySelectorAll('#sse li').length >= n &&
      document.querySelectorAll('#ws li').length >= n, count, { timeout: 15000 });
    const shown = await page.evaluate(() => ({
      sse: [...document.querySelectorAll('#sse li')].map((li) => li.textContent),
      ws: [...document.querySelectorAll('#ws li')].map((li) => li.textContent),
    }));
    process.stdout.write(JSON.stringify({ sent, shown }) + '\n');
  } finally {
    await browser.close();
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
