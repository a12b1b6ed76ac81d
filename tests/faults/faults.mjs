// faults.mjs: injected faults and a broken environment, against the real
// `mfaserve serve`:
// - MFASERVE_FAULT (common/fault.c): an allocation failure at admission
//   (sched_submit) and a failed engine step (sched_step), streamed and not:
//   the affected request gets a clean 500 / an error event, the server goes
//   on serving; the server's buffers failing to grow (srv_buf) at many
//   points: every answer is still a whole HTTP response (a stream ends with
//   an error event and [DONE], or, if part of an event had already left,
//   with a broken connection), and the server serves on and exits 0;
// - the model directory broken before start (safetensors truncated, replaced
//   by another model's, by garbage, config.json replaced): exit status 1 and
//   a message naming the model;
// - the port already in use: exit status 1, "cannot listen ... in use";
// - stderr on /dev/full (every log line fails) or closed: serves, exit 0.
// Usage: node faults.mjs MFASERVE MODEL_DIR [test name filter]
import { spawn, spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { cpSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, truncateSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, run, post, sse, assert, eq, sleep, here, metric } from '../server/lib.mjs';
import { startServerInRange, freePort, isErrorObject } from '../soak/common.mjs';

const [bin, model, only] = process.argv.slice(2);
if (!bin || !model) {
  console.error('usage: node faults.mjs MFASERVE MODEL_DIR [filter]');
  process.exit(2);
}
const T = (name, fn) => { if (!only || name.includes(only)) test(name, fn); };
const tmp = mkdtempSync(join(tmpdir(), 'mfs-faults-'));

function streamReq(base, body) {
  return fetch(base + '/v1/completions', { method: 'POST', headers: { 'content-type': 'application/json' },
                                           body: JSON.stringify({ ...body, stream: true }) });
}
async function serves(base, what, faultMayBePending = false) {
  let r = await post(base, '/v1/completions', { prompt: 'the cat', max_tokens: 3, ignore_eos: true });
  // a counted fault (site:K) that the requests before did not reach lands here once: the next one is served
  if (faultMayBePending && r.status === 500 && /out of memory/.test(r.text))
    r = await post(base, '/v1/completions', { prompt: 'the cat', max_tokens: 3, ignore_eos: true });
  eq(r.status, 200, `serves ${what}: ${r.text}`);
  eq(r.json.choices[0].finish_reason, 'length', 'finish');
}
function isServerError(r, what) {
  eq(r.status, 500, `${what} status (${r.text})`);
  assert(isErrorObject(r.json), `${what}: OpenAI error object: ${r.text}`);
  eq(r.json.error.type, 'server_error', `${what} type`);
}

// KV blocks still referenced once the server settles (polled up to ~1 s:
// a cancelled request frees its blocks within a step).
async function blocksUsedWhenIdle(base) {
  let used = -1;
  for (let i = 0; i < 20 && used !== 0; i++) {
    const st = await (await fetch(base + '/v1/cache/stats')).json();
    if (st.blocks) used = st.blocks.used;
    if (used !== 0) await sleep(50);
  }
  return used;
}

// SSE body -> the data of each event ('[DONE]' included)
const sseData = (text) => text.split('\n\n').filter((e) => e.trim()).map((e) => e.replace(/^data: /, ''));

// Runs `mfaserve serve` to its exit (it is expected to fail at start).
function serveExit(dir, extra = [], timeout = 20000) {
  const p = spawnSync(bin, ['serve', '--model', dir, '--port', '0', '--threads', '1', '--kv-cache-memory', '16M', ...extra],
                      { encoding: 'utf8', timeout });
  return { code: p.status, signal: p.signal, err: p.stderr };
}

T('allocation failure at admission (sched_submit): 500 for that request, the next ones are served', async () => {
  // submit calls: 1 ok, 2 fails (non-streamed), 3 ok, 4 fails (streamed: before the SSE response starts)
  const srv = await startServerInRange(bin, model, [], { env: { MFASERVE_FAULT: 'sched_submit:2,sched_submit:4' } });
  try {
    await serves(srv.base, 'before');
    isServerError(await post(srv.base, '/v1/completions', { prompt: 'x', max_tokens: 3 }), 'non-streamed');
    await serves(srv.base, 'after the first fault');
    const r = await streamReq(srv.base, { prompt: 'x', max_tokens: 3 });
    const body = await r.text();
    eq(r.status, 500, 'streamed request: a plain 500 (nothing was streamed yet): ' + body);
    assert(isErrorObject(JSON.parse(body)), 'error object');
    const s = await sse(await streamReq(srv.base, { prompt: 'x', max_tokens: 3 }));
    eq(s[s.length - 1], '[DONE]', 'next stream completes');
    assert(/out of memory/.test(srv.log()), 'logged');
  } finally {
    eq((await srv.stop()).code, 0, 'exit status');
  }
});

T('a failed engine step (sched_step): that step\'s requests end with an error, the server goes on', async () => {
  // step 1 is the first request's prefill: fails (non-streamed: 500). Then a
  // stream: its prefill is step 2, tokens come from steps 2.. ; step 5 fails.
  const srv = await startServerInRange(bin, model, [], { env: { MFASERVE_FAULT: 'sched_step:1,sched_step:5' } });
  try {
    isServerError(await post(srv.base, '/v1/completions', { prompt: 'x', max_tokens: 5 }), 'non-streamed');
    const ev = await sse(await streamReq(srv.base, { prompt: 'the', max_tokens: 20, ignore_eos: true }));
    eq(ev[ev.length - 1], '[DONE]', 'stream closed with [DONE]');
    const err = ev.find((e) => e !== '[DONE]' && e.error);
    assert(err && isErrorObject(err), 'an error event: ' + JSON.stringify(ev.slice(-3)));
    // (tokens of the steps before may share the failing drain; the error then replaces them)
    const toks = ev.filter((e) => e !== '[DONE]' && e.choices && e.choices.length).length;
    console.log(`     stream: ${toks} token chunks, then ${JSON.stringify(err.error.message)}`);
    await serves(srv.base, 'after the faults');
    const st = await (await fetch(srv.base + '/v1/cache/stats')).json();
    eq([st.blocks.used, st.requests.running, st.requests.waiting], [0, 0, 0], 'nothing left in the pool or queues');
    assert(/engine step failed/.test(srv.log()), 'logged');
  } finally {
    eq((await srv.stop()).code, 0, 'exit status');
  }
});

T('a failed step with n=4 and two requests in the batch: every choice ends, blocks freed', async () => {
  const srv = await startServerInRange(bin, model, [], { env: { MFASERVE_FAULT: 'sched_step:6' } });
  try {
    const a = streamReq(srv.base, { prompt: 'the', max_tokens: 40, ignore_eos: true, n: 4, temperature: 1 });
    const b = post(srv.base, '/v1/completions', { prompt: 'a cat', max_tokens: 40, ignore_eos: true });
    const [ra, rb] = await Promise.all([a, b]);
    const ev = await sse(ra);
    eq(ev[ev.length - 1], '[DONE]', 'stream closed');
    assert(ev.some((e) => e !== '[DONE]' && e.error) || rb.status === 500, 'the step\'s failure reached a client');
    assert(rb.status === 200 || (rb.status === 500 && isErrorObject(rb.json)), 'b clean: ' + rb.text);
    await serves(srv.base, 'after');
    const st = await (await fetch(srv.base + '/v1/cache/stats')).json();
    eq([st.blocks.used, st.requests.running, st.requests.waiting], [0, 0, 0], 'nothing left');
  } finally {
    eq((await srv.stop()).code, 0, 'exit status');
  }
});

// A fixed mix of requests; with srv_buf:K the Kth growth of any server
// buffer fails somewhere in it.
async function bufMix(base) {
  const out = [];
  const get = async (p) => {
    const r = await fetch(base + p);
    out.push({ what: 'GET ' + p, status: r.status, ctype: r.headers.get('content-type'), text: await r.text() });
  };
  const p = async (path, body, what) => {
    const r = await post(base, path, body);
    out.push({ what, status: r.status, ctype: r.headers.get('content-type'), text: r.text });
  };
  await get('/v1/models');
  await get('/v1/cache/stats');
  await get('/metrics');
  await p('/v1/completions', { prompt: 'the cat sat', max_tokens: 8, logprobs: 5 }, 'completion');
  await p('/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }], max_tokens: 8 }, 'chat');
  await p('/v1/completions', { prompt: 'x', max_tokens: 'bad' }, 'bad request');
  await p('/tokenize', { prompt: 'hello world' }, 'tokenize');
  const r = await streamReq(base, { prompt: 'the', max_tokens: 8 });
  let text = '';
  try { text = await r.text(); } catch (e) { text = 'READ ERROR ' + e.message; }
  out.push({ what: 'stream', status: r.status, ctype: r.headers.get('content-type'), text });
  return out;
}

T('server buffers failing to grow (srv_buf:K for many K): whole responses, JSON bodies parse, serving goes on', async () => {
  const bad = [];
  let faultsSeen = 0, streamErrors = 0, streamBreaks = 0;
  for (const k of [1, 2, 3, 4, 6, 8, 11, 15, 20, 27, 35, 50, 70, 100]) {
    const srv = await startServerInRange(bin, model, [], { env: { MFASERVE_FAULT: `srv_buf:${k}` } });
    try {
      const out = await bufMix(srv.base);
      for (const o of out) {
        if (o.status >= 500) faultsSeen++;
        if (o.ctype && o.ctype.startsWith('application/json')) {
          let j = null;
          try { j = JSON.parse(o.text); } catch {}
          if (!j) bad.push(`K=${k} ${o.what}: ${o.status} with a body that is not JSON: ${o.text.slice(0, 120)}`);
          else if (o.status >= 400 && !isErrorObject(j)) bad.push(`K=${k} ${o.what}: ${o.status} without an error object`);
          else if (o.status === 200 && j.error) bad.push(`K=${k} ${o.what}: 200 with an error`);
        } else if (o.what === 'GET /metrics' && o.status === 200 && !/mfaserve:http_requests_total/.test(o.text)) {
          bad.push(`K=${k} /metrics: 200 with a truncated body (${o.text.length} bytes)`);
        } else if (o.what === 'stream' && o.status === 200) {
          if (o.text.startsWith('READ ERROR')) { streamBreaks++; continue; } // the client sees the break
          const events = sseData(o.text);
          if (events[events.length - 1] !== '[DONE]') {
            bad.push(`K=${k} stream: 200, ended without [DONE] or a broken connection: ${o.text.slice(-120)}`);
            continue;
          }
          for (const e of events.slice(0, -1)) {
            let j = null;
            try { j = JSON.parse(e); } catch {}
            if (!j) bad.push(`K=${k} stream: an event that is not JSON: ${e.slice(0, 120)}`);
            else if (j.error) {
              streamErrors++;
              if (!isErrorObject(j)) bad.push(`K=${k} stream: a malformed error event: ${e.slice(0, 120)}`);
            }
          }
        }
      }
      await serves(srv.base, `after srv_buf:${k}`, true);
      const used = await blocksUsedWhenIdle(srv.base); // every request ended or was cancelled
      if (used !== 0) bad.push(`K=${k}: ${used} KV blocks still used after the sweep`);
    } finally {
      const ex = await srv.stop();
      if (ex.code !== 0) bad.push(`K=${k}: exit ${JSON.stringify(ex)}`);
    }
  }
  console.log(`     ${faultsSeen} answers were 5xx over the sweep; streams: ${streamErrors} ended with an error event, ` +
              `${streamBreaks} with a broken connection`);
  assert(faultsSeen > 0, 'some injected fault reached a client as a 5xx');
  assert(!bad.length, 'malformed answers:\n       ' + bad.join('\n       '));
});

T('a stream whose buffer fails to grow (srv_sse:K, its Kth flush): an error event and [DONE], blocks freed', async () => {
  const seen = { error: 0, broken: 0, whole: 0, before: 0 };
  const bad = [];
  for (const k of [1, 2, 3, 5, 8, 13, 21]) {
    const srv = await startServerInRange(bin, model, [], { env: { MFASERVE_FAULT: `srv_sse:${k}` } });
    try {
      const MAX = 3000;
      const r = await streamReq(srv.base, { prompt: 'the', max_tokens: MAX, ignore_eos: true });
      let text = '';
      try { text = await r.text(); } catch (e) { text = 'READ ERROR ' + e.message; }
      if (r.status !== 200) { seen.before++; continue; }  // failed before the stream started: a plain 5xx
      if (text.startsWith('READ ERROR')) { seen.broken++; continue; }
      const events = sseData(text);
      if (events[events.length - 1] !== '[DONE]') { bad.push(`K=${k}: no [DONE]: ${text.slice(-100)}`); continue; }
      const parsed = events.slice(0, -1).map((e) => { try { return JSON.parse(e); } catch { return null; } });
      if (parsed.some((j) => !j)) { bad.push(`K=${k}: an event that is not JSON: ${text.slice(0, 200)}`); continue; }
      const err = parsed.find((j) => j.error);
      if (err) {
        seen.error++;
        if (!isErrorObject(err) || err.error.type !== 'server_error') bad.push(`K=${k}: malformed error event`);
        // the stream ends at the failure and its request is cancelled, not run to max_tokens
        await sleep(100);
        const gen = await metric(srv.base, 'mfaserve:generation_tokens_total');
        if (!(gen < MAX)) bad.push(`K=${k}: ${gen} tokens generated: the request ran on after its stream failed`);
      } else {
        seen.whole++;
        const fin = parsed.filter((j) => j.choices && j.choices.length && j.choices[0].finish_reason);
        if (fin.length !== 1 || fin[0].choices[0].finish_reason !== 'length')
          bad.push(`K=${k}: no error event and no finish_reason "length": ${text.slice(-200)}`);
        break; // the stream had fewer than K flushes: larger K miss it too
      }
      await serves(srv.base, `after srv_sse:${k}`);
      const used = await blocksUsedWhenIdle(srv.base);
      if (used !== 0) bad.push(`K=${k}: ${used} KV blocks still used`);
    } finally {
      const ex = await srv.stop();
      if (ex.code !== 0) bad.push(`K=${k}: exit ${JSON.stringify(ex)}`);
    }
  }
  console.log(`     ${JSON.stringify(seen)}`);
  assert(seen.error > 0, 'some fault hit a running stream and ended it with an error event');
  assert(!bad.length, bad.join('\n       '));
});

function brokenModel(name, mutate) {
  const dir = join(tmp, name);
  cpSync(model, dir, { recursive: true });
  mutate(dir);
  return dir;
}

T('a model broken on disk before start: exit status 1 and a message that names it', async () => {
  const st = join(model, 'model.safetensors');
  const size = statSync(st).size;
  const cases = [
    ['truncated to half', (d) => truncateSync(join(d, 'model.safetensors'), Math.floor(size / 2))],
    ['truncated inside the header', (d) => truncateSync(join(d, 'model.safetensors'), 20)],
    ['empty', (d) => truncateSync(join(d, 'model.safetensors'), 0)],
    ['replaced by garbage', (d) => writeFileSync(join(d, 'model.safetensors'), Buffer.alloc(size, 0x5a))],
    ['replaced by another model', (d) => {
      const other = join(tmp, 'other');
      const py = spawnSync('/usr/bin/python3', [join(here, '../../tools/make_model.py'), '--attention', 'mfa-kr', '--dtype', 'f32',
        '--hidden-size', '32', '--layers', '2', '--heads', '2', '--head-dim', '16', '--vocab', '300', '--out', other]);
      eq(py.status, 0, 'make_model: ' + py.stderr);
      cpSync(join(other, 'model.safetensors'), join(d, 'model.safetensors'));
    }],
    ['config.json replaced by garbage', (d) => writeFileSync(join(d, 'config.json'), '{"hidden_size": ')],
    ['tokenizer.json missing', (d) => rmSync(join(d, 'tokenizer.json'))],
  ];
  for (const [what, mutate] of cases) {
    const dir = brokenModel(what.replace(/ /g, '_'), mutate);
    const t0 = Date.now();
    const r = serveExit(dir);
    eq(r.code, 1, `${what}: exit status (stderr: ${r.err.slice(-400)})`);
    assert(/cannot load (model|the tokenizer)/.test(r.err), `${what}: message: ${r.err.slice(-400)}`);
    const line = r.err.split('\n').find((l) => /cannot load/.test(l));
    console.log(`     ${what}: exit 1 in ${Date.now() - t0} ms: ${line.replace(/^.*? (ERROR|server): /, '').slice(0, 160)}`);
  }
});

T('the port already in use: exit status 1, "cannot listen", within seconds', async () => {
  const port = await freePort();
  const holder = createServer();
  await new Promise((res) => holder.listen(port, '127.0.0.1', res));
  try {
    const t0 = Date.now();
    const p = spawnSync(bin, ['serve', '--model', model, '--host', '127.0.0.1', '--port', String(port), '--threads', '1'],
                        { encoding: 'utf8', timeout: 20000 });
    eq(p.status, 1, 'exit status: ' + p.stderr);
    assert(new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: Address already in use`).test(p.stderr), 'message: ' + p.stderr);
    console.log(`     ${p.stderr.trim().split('\n').pop()} (${Date.now() - t0} ms)`);
  } finally {
    holder.close();
  }
});

// Starts serve with a given stderr (fd number or 'closed') on a port of our
// range; no log to read, so it polls /health.
async function startBlind(stderrSpec) {
  const port = await freePort();
  const argv = ['serve', '--model', model, '--port', String(port), '--threads', '1', '--kv-cache-memory', '16M'];
  const proc = stderrSpec === 'closed'
    ? spawn('sh', ['-c', 'exec 2>&-; exec "$0" "$@"', bin, ...argv], { stdio: ['ignore', 'ignore', 'ignore'] })
    : spawn(bin, argv, { stdio: ['ignore', 'ignore', stderrSpec] });
  let exited = null;
  const exit = new Promise((res) => proc.on('exit', (code, signal) => { exited = { code, signal }; res(exited); }));
  const base = `http://127.0.0.1:${port}`;
  const t0 = Date.now();
  for (;;) {
    try { if ((await fetch(base + '/health')).status === 200) break; } catch {}
    if (exited) throw new Error('server exited at start: ' + JSON.stringify(exited));
    if (Date.now() - t0 > 20000) { proc.kill('SIGKILL'); throw new Error('never ready'); }
    await sleep(30);
  }
  return { proc, base, exit, get exited() { return exited; } };
}

async function logFailsCase(spec) {
  const srv = await startBlind(spec);
  try {
    // requests that log (errors, 429s are WARN; start-up and each request INFO/DEBUG)
    for (let i = 0; i < 3; i++) await serves(srv.base, 'with logging failing');
    const e = await post(srv.base, '/v1/completions', { prompt: 'x', n: 1000 });
    eq(e.status, 400, 'bad request answered');
    assert(isErrorObject(e.json), 'error body intact: ' + e.text);
    const ev = await sse(await streamReq(srv.base, { prompt: 'x', max_tokens: 4 }));
    eq(ev[ev.length - 1], '[DONE]', 'stream');
  } finally {
    if (!srv.exited) srv.proc.kill('SIGTERM');
    const t = setTimeout(() => srv.proc.kill('SIGKILL'), 15000);
    const ex = await srv.exit;
    clearTimeout(t);
    eq(ex, { code: 0, signal: null }, 'exit after SIGTERM');
  }
}

T('stderr on /dev/full (every log write fails): serves, SIGTERM exits 0', async () => {
  const fd = openSync('/dev/full', 'w');
  try { await logFailsCase(fd); } finally { closeSync(fd); }
});

// stderr closed: descriptor 2 would be reused by the first open() (libuv's
// epoll descriptor), and libuv asserts when it closes a descriptor <= 2 at
// exit; cli/main.c reopens /dev/null on closed standard descriptors.
T('stderr closed: serves, SIGTERM exits 0', async () => {
  await logFailsCase('closed');
});

await run(async () => { rmSync(tmp, { recursive: true, force: true }); });
