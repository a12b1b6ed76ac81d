// soak.mjs: saturating load against the real `mfaserve serve` for a fixed
// time, then the books are checked.
//
//   node tests/soak/soak.mjs MFASERVE MODEL_DIR [--seconds 60] [--clients 24] [--seed N]
//
// The server gets a KV pool of 48 KiB (768 tokens of the test model, fewer
// than 8 running sequences of up to 256 tokens need: preemption), 8 running
// sequences and 8 queued requests at most (past that: 429), a 256-token
// context and a 64 KiB body limit. `clients` loops send, each after the
// last answer, a random mix of: completions and chat, streamed and not,
// clients that disconnect mid-stream or before the answer, malformed bodies
// (bad JSON, wrong types, huge numbers, unknown fields, ids outside the
// vocab), and requests at and just past every limit (max_tokens to the
// context limit, a prompt of the maximum length, n = --max-num-seqs,
// logprobs 20, a body over --max-body-bytes).
//
// At the end (exit 1 if any fails):
// - every request that was not abandoned on purpose got a complete answer
//   (200: each choice finished with stop/length and usage adds up; streams
//   end with [DONE]) or a clean error (the expected status with an OpenAI
//   error object); no 5xx, no broken connection; counts of each kind printed;
// - once idle: /v1/cache/stats and /metrics show 0 used KV blocks, 0 running
//   and 0 waiting requests;
// - resident memory (VmRSS) at the end of the load is within 5% of what it
//   was after warm-up (the first quarter, at most 60 s; plain builds only:
//   under AddressSanitizer RSS measures its allocator), and the server's
//   open descriptors are back to their idle count;
// - SIGTERM then gives exit status 0.
// The run is bounded: load stops after --seconds, stragglers get 60 s.
import { sse, metric, sleep } from '../server/lib.mjs';
import { startServerInRange, rssKiB, openFds, isErrorObject, median } from './common.mjs';

const argv = process.argv.slice(2);
const bin = argv[0], model = argv[1];
if (!bin || !model) {
  console.error('usage: node soak.mjs MFASERVE MODEL_DIR [--seconds N] [--clients N] [--seed N]');
  process.exit(2);
}
function flag(name, def) {
  const i = argv.indexOf('--' + name);
  return i >= 0 ? Number(argv[i + 1]) : def;
}
const SECONDS = flag('seconds', 60), CLIENTS = flag('clients', 24);
let seed = flag('seed', Date.now() % 1000000);

// xorshift: a run can be repeated with --seed
function rnd() {
  seed ^= seed << 13; seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5; seed >>>= 0;
  return seed / 4294967296;
}
const pick = (a) => a[Math.floor(rnd() * a.length)];
const int = (lo, hi) => lo + Math.floor(rnd() * (hi - lo + 1));

const MML = 256, SEQS = 8, QUEUE = 8, BODY = 65536, VOCAB = 300;
const WORDS = ['the', 'king', 'said', 'cat', 'sat', 'on', 'mat', 'hello', 'world', 'é', '日本', '🙂', 'a', 'of', '\n'];
const words = (n) => Array.from({ length: n }, () => pick(WORDS)).join(' ');
const ids = (n) => Array.from({ length: n }, () => int(0, 296));

const counts = {};
const failures = [];
// A bug this soak found (n > 1 with stop strings: cancelling a choice that
// had already ended in the scheduler ended another, live one, seen as "The
// server shut down before the request finished") is fixed in the scheduler;
// it now fails the soak like any other error. MFS_SOAK_STRICT=0 counts it
// apart again, for bisecting.
const STRICT = process.env.MFS_SOAK_STRICT !== '0';
function knownCancelRace(req, text) {
  return !STRICT && (req.body.n || 1) > 1 && req.body.stop && /shut down before the request finished/.test(text);
}
function count(kind) { counts[kind] = (counts[kind] || 0) + 1; }
function fail(kind, msg) {
  count('FAIL ' + kind);
  if (failures.length < 30) failures.push(`${kind}: ${msg}`);
}

// ---- request kinds ----
// Each returns {path, body (object or raw string), stream, expect}. expect:
// 'ok' (200 or 429), or a list of acceptable error statuses (with code).
function genRequest() {
  const r = rnd();
  const sampling = () => pick([{ temperature: 0 }, { temperature: 0.8, top_p: 0.9 }, { temperature: 1.2, top_k: 20, seed: int(0, 99) }]);
  if (r < 0.22) { // completion
    const stream = rnd() < 0.5;
    return { kind: stream ? 'completion_stream' : 'completion', path: '/v1/completions', stream, expect: 'ok',
      body: { prompt: words(int(1, 20)), max_tokens: int(1, 64), ...sampling(), stream,
              ...(stream && rnd() < 0.5 ? { stream_options: { include_usage: true } } : {}),
              ...(rnd() < 0.2 ? { stop: [pick(WORDS)] } : {}), ...(rnd() < 0.2 ? { n: int(2, 3) } : {}) } };
  }
  if (r < 0.40) { // chat
    const stream = rnd() < 0.5;
    return { kind: stream ? 'chat_stream' : 'chat', path: '/v1/chat/completions', stream, expect: 'ok',
      body: { messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: words(int(1, 15)) }],
              max_tokens: int(1, 48), ...sampling(), stream } };
  }
  if (r < 0.55) { // abandoned: the client leaves mid-stream or before the answer
    const stream = rnd() < 0.7;
    return { kind: stream ? 'disconnect_stream' : 'disconnect', path: '/v1/completions', stream, expect: 'ok',
      leaveAfter: stream ? int(1, 6) : int(5, 200),
      body: { prompt: words(int(1, 10)), max_tokens: int(40, 150), ignore_eos: true, stream, ...sampling() } };
  }
  if (r < 0.75) { // malformed: 400 (404 for an unknown model)
    const bad = pick([
      ['bad_json', '{"prompt": "x", "max_tokens": 4', [400]],
      ['bad_json', '{"prompt": "x",}', [400]],
      ['bad_json', 'not json at all', [400]],
      ['bad_json', '', [400]],
      ['bad_json', '[1,2,3]', [400]],
      ['lone_surrogate', '{"prompt": "\\ud800 x", "max_tokens": 2}', [400, 200]],
      ['wrong_type', { prompt: 'x', max_tokens: 'ten' }, [400]],
      ['wrong_type', { prompt: 5 }, [400]],
      ['wrong_type', { prompt: 'x', stream: 'yes' }, [400]],
      ['wrong_type', { prompt: 'x', temperature: [1] }, [400]],
      ['wrong_type', { prompt: 'x', n: 1.5 }, [400]],
      ['wrong_type', { prompt: 'x', stop: 7 }, [400]],
      ['wrong_type', { prompt: [1, 'a'] }, [400]],
      ['wrong_type', { prompt: 'x', logprobs: true }, [400]],
      ['huge_number', '{"prompt": "x", "max_tokens": 1e300}', [400]],
      ['huge_number', '{"prompt": "x", "max_tokens": 99999999999999999999999}', [400]],
      ['huge_number', '{"prompt": "x", "n": 1e20}', [400]],
      ['huge_number', '{"prompt": "x", "temperature": 1e308, "max_tokens": 1}', [400]],
      ['huge_number', '{"prompt": "x", "seed": 1e30, "max_tokens": 1}', [400, 200]],
      ['huge_number', '{"prompt": [1e10]}', [400]],
      ['huge_number', '{"prompt": "x", "max_tokens": -1}', [400]],
      ['unknown_field', { prompt: 'x', frobnicate: true }, [400]],
      ['unknown_field', { prompt: 'x', max_tokens: 2, 'ma\u0000x': 1 }, [400]],
      ['bad_value', { prompt: [5, VOCAB] }, [400]],
      ['bad_value', { prompt: 'x', model: 'no-such-model' }, [404]],
      ['bad_value', { prompt: '' }, [400]],
      ['bad_value', { prompt: 'x', top_p: 0 }, [400]],
    ]);
    const chat = rnd() < 0.2 && typeof bad[1] === 'object';
    const body = chat ? { messages: [{ role: 'user', content: 5 }] } : bad[1];
    return { kind: 'malformed_' + bad[0], path: chat ? '/v1/chat/completions' : '/v1/completions', stream: false,
             expect: chat ? [400] : bad[2], body };
  }
  // at and past the limits
  const lim = pick(['max_tokens_at_context', 'max_tokens_past_context', 'prompt_max_len', 'prompt_past_len', 'n_at_limit',
                    'n_past_limit', 'logprobs_20', 'logprobs_21', 'top_logprobs_20', 'body_over_limit', 'prompt_many']);
  const L = int(1, 40);
  switch (lim) {
  case 'max_tokens_at_context':
    return { kind: 'limit_' + lim, path: '/v1/completions', stream: rnd() < 0.5, expect: 'ok', ctx: true,
             body: { prompt: ids(L), max_tokens: MML - L, ignore_eos: true, temperature: 0 } };
  case 'max_tokens_past_context':
    return { kind: 'limit_' + lim, path: '/v1/completions', stream: false, expect: [400], code: 'context_length_exceeded',
             body: { prompt: ids(L), max_tokens: MML - L + 1 } };
  case 'prompt_max_len':
    return { kind: 'limit_' + lim, path: '/v1/completions', stream: false, expect: 'ok',
             body: { prompt: ids(MML - 1), max_tokens: 1 } };
  case 'prompt_past_len':
    return { kind: 'limit_' + lim, path: '/v1/completions', stream: false, expect: [400], code: 'context_length_exceeded',
             body: { prompt: ids(MML), max_tokens: 1 } };
  case 'n_at_limit':
    return { kind: 'limit_' + lim, path: '/v1/completions', stream: rnd() < 0.5, expect: 'ok',
             body: { prompt: words(3), n: SEQS, max_tokens: int(1, 16), temperature: 1 } };
  case 'n_past_limit':
    return { kind: 'limit_' + lim, path: '/v1/completions', stream: false, expect: [400],
             body: { prompt: words(3), n: pick([SEQS + 1, 128, 129]), max_tokens: 2 } };
  case 'logprobs_20':
    return { kind: 'limit_' + lim, path: '/v1/completions', stream: rnd() < 0.5, expect: 'ok', logprobs: 20,
             body: { prompt: words(4), logprobs: 20, max_tokens: int(1, 8), ...(rnd() < 0.3 ? { echo: true } : {}) } };
  case 'logprobs_21':
    return { kind: 'limit_' + lim, path: '/v1/completions', stream: false, expect: [400],
             body: { prompt: words(4), logprobs: 21, max_tokens: 2 } };
  case 'top_logprobs_20':
    return { kind: 'limit_' + lim, path: '/v1/chat/completions', stream: rnd() < 0.5, expect: 'ok', top: 20,
             body: { messages: [{ role: 'user', content: words(3) }], logprobs: true, top_logprobs: 20, max_tokens: int(1, 8) } };
  case 'body_over_limit':
    return { kind: 'limit_' + lim, path: '/v1/completions', stream: false, expect: [413],
             body: { prompt: 'a'.repeat(BODY + 10), max_tokens: 1 } };
  default: // many prompts in one request
    return { kind: 'limit_' + lim, path: '/v1/completions', stream: false, expect: 'ok',
             body: { prompt: Array.from({ length: int(2, 6) }, () => words(3)), max_tokens: int(1, 8) } };
  }
}

// ---- checking answers ----
function checkComplete(req, status, json, events) {
  const n = (req.body.n || 1) * (Array.isArray(req.body.prompt) && typeof req.body.prompt[0] === 'string' ? req.body.prompt.length : 1);
  const isChat = req.path.includes('chat');
  if (!req.stream) {
    if (!json || !Array.isArray(json.choices)) return 'no choices: ' + JSON.stringify(json).slice(0, 200);
    if (json.choices.length !== n) return `expected ${n} choices, got ${json.choices.length}`;
    for (const c of json.choices) {
      if (!['stop', 'length'].includes(c.finish_reason)) return 'finish_reason ' + c.finish_reason;
      if (isChat ? typeof c.message?.content !== 'string' : typeof c.text !== 'string') return 'no text';
      if (req.top && c.finish_reason && c.logprobs?.content?.length && c.logprobs.content[0].top_logprobs.length !== 20)
        return 'top_logprobs ' + c.logprobs.content[0].top_logprobs.length;
      if (req.logprobs && !req.body.echo && (!c.logprobs || !Array.isArray(c.logprobs.token_logprobs))) return 'logprobs missing';
    }
    const u = json.usage;
    if (!u || u.total_tokens !== u.prompt_tokens + u.completion_tokens) return 'usage ' + JSON.stringify(u);
    if (req.ctx && u.prompt_tokens + u.completion_tokens > MML) return 'over the context: ' + JSON.stringify(u);
    return null;
  }
  if (events[events.length - 1] !== '[DONE]') return 'stream did not end with [DONE]';
  const err = events.find((e) => e !== '[DONE]' && e.error);
  if (err) return knownCancelRace(req, JSON.stringify(err)) ? 'KNOWN' : 'error event: ' + JSON.stringify(err);
  const fin = new Set();
  for (const e of events)
    if (e !== '[DONE]') for (const c of e.choices || []) if (c.finish_reason) {
      if (!['stop', 'length'].includes(c.finish_reason)) return 'finish_reason ' + c.finish_reason;
      fin.add(c.index);
    }
  if (fin.size !== n) return `${fin.size} of ${n} choices finished`;
  return null;
}

async function once(base, req) {
  const ac = new AbortController();
  const leaving = req.kind.startsWith('disconnect');
  let timer = null;
  if (leaving && !req.stream) timer = setTimeout(() => ac.abort(), req.leaveAfter);
  const hard = setTimeout(() => ac.abort(new Error('timeout')), 120000);
  try {
    if (req.stream && typeof req.body === 'object') req.body.stream = true;
    const res = await fetch(base + req.path, {
      method: 'POST', signal: ac.signal, headers: { 'content-type': 'application/json' },
      body: typeof req.body === 'string' ? req.body : JSON.stringify(req.body),
    });
    if (res.status === 200 && req.stream) {
      let seen = 0;
      const events = await sse(res, () => {
        if (leaving && ++seen >= req.leaveAfter) {
          ac.abort();
          return false;
        }
      });
      if (leaving && seen >= req.leaveAfter) return count('abandoned mid-stream');
      if (leaving) return count(`${req.kind}: finished before leaving`);
      const why = checkComplete(req, 200, null, events);
      if (why === 'KNOWN') return count('KNOWN BUG: n > 1 + stop: a live choice cancelled (error event)');
      return why ? fail(req.kind, why) : count(`${req.kind}: 200 complete`);
    }
    const text = await res.text();
    let json = null;
    try { json = JSON.parse(text); } catch {}
    if (res.status === 200) {
      if (Array.isArray(req.expect) && !req.expect.includes(200)) return fail(req.kind, 'expected an error, got 200: ' + text.slice(0, 200));
      const why = req.stream ? 'expected a stream' : checkComplete(req, 200, json, null);
      return why ? fail(req.kind, why) : count(`${req.kind}: 200 complete`);
    }
    if (!isErrorObject(json)) return fail(req.kind, `status ${res.status} without an OpenAI error object: ${text.slice(0, 200)}`);
    if (res.status === 429) {
      if (res.headers.get('retry-after') !== '1') return fail(req.kind, '429 without Retry-After');
      if (req.expect !== 'ok' && !req.expect.includes(200)) return fail(req.kind, 'unexpected 429');
      count(`${req.kind}: 429 ${json.error.code}`);
      return sleep(int(10, 100)); // a polite client backs off
    }
    if (res.status === 503 && knownCancelRace(req, text)) return count('KNOWN BUG: n > 1 + stop: a live choice cancelled (503)');
    if (req.expect === 'ok' || !req.expect.includes(res.status))
      return fail(req.kind, `status ${res.status}: ${text.slice(0, 300)} for ${JSON.stringify(req.body).slice(0, 200)}`);
    if (req.code && json.error.code !== req.code) return fail(req.kind, `code ${json.error.code}, expected ${req.code}`);
    return count(`${req.kind}: ${res.status} ${json.error.code ?? json.error.type}`);
  } catch (e) {
    if (leaving && ac.signal.aborted) return count('abandoned before the answer');
    return fail(req.kind, 'connection: ' + (e.cause ? e.cause.code || e.cause.message : e.message));
  } finally {
    clearTimeout(timer);
    clearTimeout(hard);
  }
}

// ---- the run ----
const srv = await startServerInRange(bin, model, [
  '--kv-cache-memory', '48K', '--max-num-seqs', String(SEQS), '--max-queued-requests', String(QUEUE),
  '--max-model-len', String(MML), '--max-body-bytes', String(BODY), '--max-num-batched-tokens', '512']);
const pid = srv.proc.pid;
console.log(`soak: ${SECONDS} s, ${CLIENTS} clients, seed ${seed}, server pid ${pid} on ${srv.base}`);
const idleFds = openFds(pid);
const t0 = Date.now(), end = t0 + SECONDS * 1000;
const warm = Math.min(SECONDS * 1000 / 4, 60000);
const rss = []; // [ms since start, KiB]
const sampler = setInterval(() => { try { rss.push([Date.now() - t0, rssKiB(pid)]); } catch {} }, 500);
let sent = 0;
async function client() {
  while (Date.now() < end) {
    sent++;
    await once(srv.base, genRequest());
  }
}
const progress = setInterval(() => {
  const s = Math.round((Date.now() - t0) / 1000);
  console.log(`  ${s} s: ${sent} requests, RSS ${rss.length ? rss[rss.length - 1][1] : '?'} KiB`);
}, 15000);
let failedStop = false;
const stragglers = setTimeout(() => { failedStop = true; }, SECONDS * 1000 + 60000);
await Promise.all(Array.from({ length: CLIENTS }, client));
clearTimeout(stragglers);
clearInterval(progress);
clearInterval(sampler);
if (failedStop) fail('bounded', 'requests still running 60 s after the end');

// ---- the books ----
let stats = null, okIdle = false;
for (let k = 0; k < 100 && !okIdle; k++) {
  stats = await (await fetch(srv.base + '/v1/cache/stats')).json();
  okIdle = stats.blocks.used === 0 && stats.requests.running === 0 && stats.requests.waiting === 0 && stats.sequences.length === 0;
  if (!okIdle) await sleep(100);
}
if (!okIdle) fail('idle', 'cache stats after the load: ' + JSON.stringify({ blocks: stats.blocks, requests: stats.requests, sequences: stats.sequences }));
const mUsed = await metric(srv.base, 'mfaserve:kv_cache_used_blocks');
const mRun = await metric(srv.base, 'mfaserve:num_requests_running');
const mWait = await metric(srv.base, 'mfaserve:num_requests_waiting');
const preempt = await metric(srv.base, 'mfaserve:num_preemptions_total');
if (mUsed !== 0 || mRun !== 0 || mWait !== 0) fail('idle', `/metrics: used blocks ${mUsed}, running ${mRun}, waiting ${mWait}`);
let fdsNow = openFds(pid);
for (let k = 0; k < 60 && fdsNow > idleFds; k++) { await sleep(100); fdsNow = openFds(pid); } // keep-alive sockets close
if (fdsNow > idleFds + 2) fail('fds', `open descriptors ${idleFds} idle before, ${fdsNow} after`);

const after = rss.filter(([t]) => t >= warm && t < warm + 5000).map(([, v]) => v);
const last = rss.filter(([t]) => t >= SECONDS * 1000 - 5000).map(([, v]) => v);
const base = median(after), fin = median(last), peak = Math.max(...rss.map(([, v]) => v));
const drift = (fin - base) / base;
const idleRss = rssKiB(pid);
console.log(`RSS: ${base} KiB after warm-up (${(warm / 1000).toFixed(0)} s), ${fin} KiB at the end of the load ` +
            `(drift ${(drift * 100).toFixed(2)}%), peak ${peak}, ${idleRss} KiB idle after`);
// Under AddressSanitizer RSS measures ASan's allocator, not the server: freed
// memory waits in its quarantine (256 MiB by default: RSS climbs until it is
// full, 4.2% past the warm-up alone and 34% beside other tests on 2 cores),
// and with a 16 MiB quarantine its size-class regions still grew 10% over 45 s
// while the same load in the plain build stays flat (20460 -> 20564 KiB).
// Leaks are LeakSanitizer's job there; the bound is checked in plain builds.
if (process.env.ASAN_OPTIONS) console.log('(AddressSanitizer build: RSS drift reported, not checked)');
else if (!(Math.abs(drift) < 0.05)) fail('rss', `resident memory drifted ${(drift * 100).toFixed(2)}% (${base} -> ${fin} KiB)`);

const ex = await srv.stop();
if (ex.code !== 0) fail('exit', `exit status ${JSON.stringify(ex)}\n${srv.log().slice(-2000)}`);
if (/Sanitizer|runtime error/.test(srv.log())) fail('sanitizer', srv.log().slice(-3000));

const total = Object.entries(counts).reduce((a, [, v]) => a + v, 0);
console.log(`${total} requests in ${((Date.now() - t0) / 1000).toFixed(0)} s, ${preempt} preemptions; by kind and outcome:`);
for (const k of Object.keys(counts).sort()) console.log(`  ${String(counts[k]).padStart(6)}  ${k}`);
const n429 = Object.entries(counts).filter(([k]) => / 429 /.test(k)).reduce((a, [, v]) => a + v, 0);
if (SECONDS >= 20 && !(preempt > 0)) fail('coverage', 'no preemption happened (the pool was meant to be too small)');
if (SECONDS >= 20 && !(n429 > 0)) fail('coverage', 'no 429 happened (the queue was meant to overflow)');
if (failures.length) {
  console.log('FAILURES:\n  ' + failures.join('\n  '));
  process.exit(1);
}
console.log('soak passed');
process.exit(0);
