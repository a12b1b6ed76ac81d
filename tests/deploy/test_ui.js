#!/usr/bin/env node
// test_ui.js: the live cache page (/) end to end, in Debian's headless
// Chromium driven by playwright-core. Starts `mfaserve serve` with a random
// MFA-KR model and a small KV pool on a free loopback port, opens the page,
// runs load (concurrent completions with long max_tokens and ignore_eos, a
// shared prompt prefix, one request with n=2), and checks that the page shows
// it: used blocks and running requests > 0, sequences listed, shared blocks,
// model and attention kind, a live connection, no page errors. Saves a
// screenshot (with a block's tooltip) to --artifacts/deploy_ui.png.
//
//   node tests/deploy/test_ui.js --bin build/mfaserve --artifacts tests/artifacts
//
// Needs /usr/bin/chromium (apt-get install chromium) and
// tests/deploy/node_modules (npm ci --prefix tests/deploy); skips (77) without them.
"use strict";
const fs = require("fs"), os = require("os"), path = require("path"), net = require("net");
const { spawn, execFileSync } = require("child_process");

const REPO = path.resolve(__dirname, "..", "..");
const argv = process.argv.slice(2);
const arg = (name, def) => { const i = argv.indexOf(name); return i >= 0 ? argv[i + 1] : def; };
const BIN = path.resolve(arg("--bin", path.join(REPO, "build", "mfaserve")));
const ARTIFACTS = path.resolve(arg("--artifacts", path.join(REPO, "tests", "artifacts")));
const CHROMIUM = arg("--chromium", "/usr/bin/chromium");
const SKIP = 77;

function skip(msg) { console.log("SKIP: " + msg); process.exit(SKIP); }
let chromium;
try { ({ chromium } = require(path.join(__dirname, "node_modules", "playwright-core"))); }
catch (e) { skip("playwright-core not installed (npm ci --prefix tests/deploy)"); }
if (!fs.existsSync(CHROMIUM)) skip(CHROMIUM + " missing (apt-get install chromium)");
try { execFileSync(BIN, ["serve", "--help"], { stdio: "ignore" }); }
catch (e) { skip(BIN + " has no `serve` command yet"); }

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let server = null;  // killed if the test dies
function freePort() {
  return new Promise((res, rej) => { const s = net.createServer(); s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => res(p)); }); s.on("error", rej); });
}

async function main() {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "mfs-ui-"));
  const model = path.join(tmp, "mfa-kr-random");
  // Big enough that a few sequences of ~1000 tokens take seconds on two shared
  // cores (the page polls twice a second), small enough to load instantly.
  execFileSync("/usr/bin/python3", [path.join(REPO, "tools", "make_model.py"), "--attention", "mfa-kr", "--dtype", "bf16",
    "--hidden-size", "256", "--layers", "4", "--heads", "4", "--head-dim", "32", "--vocab", "300", "--out", model], { stdio: "ignore" });
  execFileSync("/usr/bin/python3", [path.join(REPO, "tests", "server", "make_tokenizer.py"), model], { stdio: "ignore" });
  const port = await freePort(), base = `http://127.0.0.1:${port}`;
  const logPath = path.join(tmp, "server.log"), log = fs.openSync(logPath, "w");
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("MFASERVE_")));
  // KV pool: 4 layers x 32 elements x 2 bytes = 256 B/token; 1 MiB = 4096 tokens = 256 blocks of 16.
  const srv = spawn(BIN, ["serve", "--model", model, "--host", "127.0.0.1", "--port", String(port), "--kv-cache-memory", "1M",
    "--block-size", "16", "--max-num-seqs", "16", "--shutdown-timeout", "5"], { stdio: ["ignore", log, log], env });
  let srvExit = null;
  server = srv;
  srv.on("exit", (code, sig) => { srvExit = { code, sig }; });
  const dumpLog = () => console.log("---- server log ----\n" + fs.readFileSync(logPath, "utf8").slice(-4000));

  const t0 = Date.now();
  for (;;) {
    if (srvExit) { dumpLog(); throw new Error("server exited early: " + JSON.stringify(srvExit)); }
    try { if ((await fetch(base + "/health")).status === 200) break; } catch (e) { /* not yet */ }
    if (Date.now() - t0 > 60000) { dumpLog(); throw new Error("server not healthy in 60 s"); }
    await sleep(100);
  }
  const modelId = (await (await fetch(base + "/v1/models")).json()).data[0].id;

  const udd = fs.mkdtempSync(path.join(os.tmpdir(), "mfs-chromium-"));
  const ctx = await chromium.launchPersistentContext(udd, {
    executablePath: CHROMIUM, headless: true, viewport: { width: 1440, height: 900 }, deviceScaleFactor: 1,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  const errors = [];
  const page = ctx.pages()[0] || (await ctx.newPage());
  page.on("pageerror", (e) => errors.push("pageerror: " + e.message));
  page.on("console", (m) => { if (m.type() === "error") errors.push("console: " + m.text()); });
  page.on("response", (r) => { if (r.status() >= 400) errors.push(`HTTP ${r.status()} for ${r.url()}`); });
  await page.goto(base + "/");
  await page.waitForFunction(() => window.__mfs && window.__mfs.polls > 0, null, { timeout: 15000 });

  // Load: waves of concurrent completions sharing a 48-token prefix (3 full
  // blocks served from the prefix cache), one with n=2 (forked sequences).
  let stop = false, sent = 0, done = 0, failed = [];
  const prefix = Array.from({ length: 48 }, (_, i) => 10 + i);
  async function client(k) {
    while (!stop) {
      const body = { model: modelId, prompt: prefix.concat([100 + k, 200 + (sent % 50), 250 + k]), max_tokens: 1500,
                     temperature: 0.8, seed: k + sent, ignore_eos: true, n: k === 0 ? 2 : 1 };
      sent++;
      try {
        const r = await fetch(base + "/v1/completions", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
        const j = await r.json();
        if (r.status === 200) done++;
        else if (!stop) failed.push(r.status + " " + JSON.stringify(j).slice(0, 200));  // 503s of the drain are expected
      } catch (e) { if (!stop) failed.push(String(e)); }
    }
  }
  const clients = Array.from({ length: 5 }, (_, k) => client(k));

  // Watch the page until it shows the load (and a shared block to hover).
  const seen = { running: 0, used: 0, seqs: 0, shared: 0, tps: 0 };
  const deadline = Date.now() + 60000;
  let shot = false;
  while (Date.now() < deadline) {
    await sleep(250);
    const v = await page.evaluate(() => {
      const s = window.__mfs, st = s.stats || {};
      let shared = 0; for (const o of s.blockOwners.values()) if (o.length > 1) shared++;
      return { running: +document.getElementById("running").dataset.value, used: +document.getElementById("blocks-used").dataset.value,
               seqs: document.querySelectorAll("#seqs tr.seq").length, shared, history: s.history.length,
               tps: +document.getElementById("tps").dataset.value,
               model: document.getElementById("model").textContent, attention: document.getElementById("attention").textContent,
               conn: document.getElementById("conn").className, statsModel: st.model };
    });
    for (const k of ["running", "used", "seqs", "shared", "tps"]) seen[k] = Math.max(seen[k], v[k]);
    if (v.running > 0 && v.used > 0 && v.seqs >= 2 && v.shared > 0 && v.tps > 0 && v.history >= 12) {
      // Hover a shared block so the screenshot shows who holds it.
      const pos = await page.evaluate(() => {
        const s = window.__mfs, L = s.layout, r = document.getElementById("map").getBoundingClientRect();
        for (const [blk, o] of s.blockOwners) if (o.length > 1 && blk >= L.start && blk < L.end) {
          const c = Math.floor((blk - L.start) / L.group);
          return { x: r.left + (c % L.cols) * L.size + L.size / 2, y: r.top + Math.floor(c / L.cols) * L.size + L.size / 2 };
        }
        return null;
      });
      if (pos) { await page.mouse.move(pos.x, pos.y); await sleep(150); }
      fs.mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: path.join(ARTIFACTS, "deploy_ui.png"), fullPage: true });
      console.log("page:", JSON.stringify(v));
      shot = true;
      break;
    }
  }
  stop = true;
  const check = [];
  const ok = (cond, msg) => { if (!cond) check.push(msg); };
  ok(shot, "page never showed the load at once: " + JSON.stringify(seen));
  ok(seen.running > 0, "page showed running requests > 0");
  ok(seen.used > 0, "page showed used blocks > 0");
  ok(seen.seqs >= 2, "page listed the running sequences");
  ok(seen.shared > 0, "page showed blocks shared between sequences");
  ok(seen.tps > 0, "page showed tokens/s > 0");
  const final = await page.evaluate(() => ({ model: document.getElementById("model").textContent,
    attention: document.getElementById("attention").textContent, conn: document.getElementById("conn").className }));
  ok(final.model === modelId, `page shows the model (${final.model} vs ${modelId})`);
  ok(final.attention === "MFA-KR", "page shows the attention kind (" + final.attention + ")");
  ok(final.conn === "live", "page connection live (" + final.conn + ")");
  ok(errors.length === 0, "no page errors: " + errors.join("; "));

  // With --api-key, /v1/cache/stats needs the key: the page asks for it once.
  const kport = await freePort(), kbase = `http://127.0.0.1:${kport}`;
  const ksrv = spawn(BIN, ["serve", "--model", model, "--host", "127.0.0.1", "--port", String(kport), "--kv-cache-memory", "1M",
    "--api-key", "sk-deploy-test"], { stdio: ["ignore", log, log], env });
  for (let i = 0; i < 300; i++) {
    try { if ((await fetch(kbase + "/health")).status === 200) break; } catch (e) { /* not yet */ }
    await sleep(100);
  }
  const kpage = await ctx.newPage();
  await kpage.goto(kbase + "/");
  await kpage.waitForSelector("#keyform", { state: "visible", timeout: 10000 }).catch(() => {});
  ok(await kpage.isVisible("#keyform"), "with --api-key the page asks for the key");
  await kpage.fill("#key", "sk-deploy-test");
  await kpage.click("#keyform button");
  const keyed = await kpage.waitForFunction(() => window.__mfs.polls > 0, null, { timeout: 10000 }).then(() => true, () => false);
  ok(keyed && (await kpage.textContent("#model")) === modelId, "the page polls with the key it was given");
  ok(!(await kpage.isVisible("#keyform")), "the key form hides once the key works");
  ksrv.kill("SIGTERM");
  await kpage.close();
  await ctx.close();
  fs.rmSync(udd, { recursive: true, force: true });

  srv.kill("SIGTERM");  // the waves still in flight end with the drain
  await Promise.race([Promise.allSettled(clients), sleep(15000)]);
  for (let i = 0; i < 100 && !srvExit; i++) await sleep(100);
  ok(srvExit && srvExit.code === 0, "server exit 0 after SIGTERM (" + JSON.stringify(srvExit) + ")");
  ok(failed.length === 0, "completions failed before the drain: " + failed.slice(0, 3).join(" | "));
  console.log(`load: ${sent} sent, ${done} done; seen ${JSON.stringify(seen)}; screenshot ${path.join(ARTIFACTS, "deploy_ui.png")}`);
  if (check.length) { dumpLog(); console.log("FAIL:\n  " + check.join("\n  ")); process.exit(1); }
  fs.rmSync(tmp, { recursive: true, force: true });
  console.log("PASS");
  process.exit(0);
}
main().catch((e) => {
  console.log("FAIL: " + (e.stack || e));
  if (server && server.exitCode === null) server.kill("SIGKILL");
  process.exit(1);
});
