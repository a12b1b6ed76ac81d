// lib.mjs: shared pieces of the server's end-to-end tests: start the real
// `mfaserve serve` on a free loopback port (--port 0; the port is read from
// its start-up log), wait for /health, a tiny sequential test runner, SSE
// parsing over fetch.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const here = dirname(fileURLToPath(import.meta.url));

export function args() {
  const [bin, model] = process.argv.slice(2);
  if (!bin || !model) {
    console.error('usage: node TEST.mjs MFASERVE_BINARY MODEL_DIR');
    process.exit(2);
  }
  return { bin, model };
}

export function needOpenAI() {
  if (!existsSync(join(here, 'node_modules', 'openai'))) {
    console.log('SKIP: the openai npm client is not installed; run: npm ci --prefix tests/server');
    process.exit(77);
  }
}

export async function startServer(bin, model, extra = [], { env = {}, ready = true, nofile = 0 } = {}) {
  const argv = ['serve', '--model', model, '--port', '0', '--kv-cache-memory', '16M', '--served-model-name',
                'testmodel', '--threads', '1', ...extra];
  const opts = { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } };
  // nofile: run under `ulimit -n` (node raises its own limit, which children inherit)
  const proc = nofile ? spawn('sh', ['-c', `ulimit -n ${nofile} && exec "$0" "$@"`, bin, ...argv], opts)
                      : spawn(bin, argv, opts);
  let log = '';
  let exited = null;
  const exit = new Promise((res) => proc.on('exit', (code, sig) => { exited = { code, sig }; res(exited); }));
  proc.stderr.on('data', (d) => { log += d; });
  const t0 = Date.now();
  let port = 0;
  while (!port) {
    const m = /listening on http:\/\/[^ ]*:(\d+)/.exec(log);
    if (m) port = +m[1];
    else if (exited || Date.now() - t0 > 20000) throw new Error(`server did not start (${JSON.stringify(exited)}):\n${log}`);
    else await sleep(20);
  }
  const base = `http://127.0.0.1:${port}`;
  if (ready) {
    for (;;) {
      try {
        if ((await fetch(base + '/health')).status === 200) break;
      } catch {}
      if (exited || Date.now() - t0 > 30000) throw new Error(`server never became ready:\n${log}`);
      await sleep(20);
    }
  }
  return {
    proc, port, base, exit,
    log: () => log,
    async stop() {
      if (!exited) proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 15000);
      const r = await exit;
      clearTimeout(timer);
      return r;
    },
  };
}

const tests = [];
export function test(name, fn) { tests.push({ name, fn }); }

export async function run(cleanup) {
  let failed = 0;
  for (const t of tests) {
    const t0 = Date.now();
    try {
      await t.fn();
      console.log(`ok   ${t.name} (${Date.now() - t0} ms)`);
    } catch (e) {
      failed++;
      console.log(`FAIL ${t.name}: ${e && e.stack ? e.stack : e}`);
    }
  }
  if (cleanup) await cleanup(failed);
  console.log(failed ? `${failed} of ${tests.length} failed` : `all ${tests.length} passed`);
  process.exit(failed ? 1 : 0);
}

export async function post(base, path, body, headers = {}) {
  const r = await fetch(base + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body), // bytes as they are
  });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch {}
  return { status: r.status, headers: r.headers, text, json };
}

// Reads an SSE response; returns the parsed data objects (and '[DONE]').
export async function sse(res, onEvent) {
  const dec = new TextDecoder();
  let buf = '';
  const events = [];
  for await (const chunk of res.body) {
    buf += dec.decode(chunk, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      for (const line of block.split('\n')) {
        if (!line.startsWith('data: ')) continue;
        const d = line.slice(6);
        const ev = d === '[DONE]' ? d : JSON.parse(d);
        events.push(ev);
        if (onEvent && (await onEvent(ev)) === false) return events;
      }
    }
  }
  return events;
}

// The value of the first sample of `name` whose labels include `labels` in
// Prometheus text t (NaN when there is none).
export function metricIn(t, name, labels = '') {
  for (const line of t.split('\n')) {
    if (line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    const key = line.slice(0, sp);
    if (key.startsWith(name + '{') && key.includes(labels)) return Number(line.slice(sp + 1));
  }
  return NaN;
}

export async function metric(base, name, labels = '') {
  return metricIn(await (await fetch(base + '/metrics')).text(), name, labels);
}

// { metric name: its # TYPE } of Prometheus text t
export function metricTypes(t) {
  const types = {};
  for (const m of t.matchAll(/^# TYPE (\S+) (\S+)$/gm)) types[m[1]] = m[2];
  return types;
}

export function assert(cond, msg) {
  if (!cond) throw new Error('assertion failed: ' + msg);
}
export function eq(a, b, msg) {
  const sa = JSON.stringify(a), sb = JSON.stringify(b);
  if (sa !== sb) throw new Error(`${msg}: expected ${sb}, got ${sa}`);
}
