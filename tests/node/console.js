// Drives the web console in Debian's headless Chromium (playwright-core): the page loads,
// shows the stream the test created over psql, and its plot moves once the test inserts
// rows; then a screenshot. Talks to the test on stdin/stdout:
//   -> "shown <points>"     the stream's card and plot are on the page
//   <- "inserted"           the test inserted rows (over psql)
//   -> "moved <max>"        the plot has a rate above zero
//   -> "console ok"         no errors in the page's console, screenshot written
// Usage: node console.js <url> <stream> <screenshot.png> [user password]
"use strict";

const readline = require("readline");
const { chromium } = require("playwright-core");

const [url, stream, screenshot, user, password] = process.argv.slice(2);
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  const errors = [];
  try {
    const context = await browser.newContext({
      viewport: { width: 1366, height: 900 },
      httpCredentials: user ? { username: user, password } : undefined,
    });
    const page = await context.newPage();
    page.on("console", (message) => {
      if (message.type() === "error") errors.push(`console: ${message.text()}`);
    });
    page.on("pageerror", (error) => errors.push(`page: ${error.message}`));
    page.on("requestfailed", (request) => errors.push(`request: ${request.url()} ${request.failure().errorText}`));

    const response = await page.goto(url);
    if (!response.ok()) throw new Error(`${url}: HTTP ${response.status()}`);
    const plot = page.locator(`#stream-cards .card[data-name="${stream}"] canvas.plot`);
    await plot.waitFor({ timeout: 30000 });
    // The plot has a point once the history has sampled the stream.
    for (let i = 0; i < 60 && !(Number(await plot.getAttribute("data-points")) > 0); i += 1) {
      await page.waitForTimeout(500);
    }
    const status = await page.locator("#status").textContent();
    if (!status.startsWith("updated")) throw new Error(`the page says: ${status}`);
    const before = Number(await plot.getAttribute("data-max"));
    if (before !== 0) throw new Error(`records appended before any were inserted: ${before}`);
    console.log(`shown ${await plot.getAttribute("data-points")}`);

    const next = await lines.next();
    if (next.value !== "inserted") throw new Error(`expected "inserted", got ${next.value}`);
    // Cards are redrawn every refresh: look the plot up again each time.
    let max = 0;
    for (let i = 0; i < 60 && !(max > 0); i += 1) {
      await page.waitForTimeout(500);
      max = Number(await plot.getAttribute("data-max").catch(() => "0")) || 0;
    }
    if (!(max > 0)) throw new Error("the stream's plot did not move");
    console.log(`moved ${max}`);

    // The SQL box: a bounded SELECT shows its rows.
    await page.fill("#sql-text", `SELECT count(*) AS n FROM ${stream}`);
    await page.click("#sql-form button");
    await page.locator("#sql-result table td").first().waitFor({ timeout: 30000 });
    console.log(`sql ${await page.locator("#sql-result table td").first().textContent()}`);

    await page.screenshot({ path: screenshot, fullPage: true });
  } finally {
    await browser.close();
  }
  if (errors.length) throw new Error(`errors in the page:\n${errors.join("\n")}`);
  console.log("console ok");
}

main().then(() => process.exit(0), (error) => {
  console.error(error);
  process.exit(1);
});
