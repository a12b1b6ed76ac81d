// e2e_http.mjs: plain HTTP against the real server: raw error cases and
// their status codes, 413, /tokenize and /detokenize, concurrent streams,
// a client disconnecting mid-stream (its blocks must be freed), /metrics
// (checked with promtool when installed) and /v1/cache/stats; on raw
// sockets, what clients and proxies send that a fetch() never would.
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import { args, startServer, test, run, post, sse, metric, metricIn, metricTypes, assert, eq, sleep } from './lib.mjs';

const { bin, model } = args();
const srv = await startServer(bin, model, ['--max-body-bytes', '16384', '--max-model-len', '4096']);
const B = srv.base;

function isError(r, status, type) {
  eq(r.status, status, 'status for ' + r.text);
  assert(r.json && r.json.error, 'error object: ' + r.text);
  for (const k of ['message', 'type', 'param', 'code']) assert(k in r.json.error, 'error.' + k);
  assert(typeof r.json.error.message === 'string' && r.json.error.message.length > 0, 'message');
  if (type) eq(r.json.error.type, type, 'type');
}

test('GET /health, /version, /, HEAD', async () => {
  eq((await fetch(B + '/health')).status, 200, 'health');
  const v = await (await fetch(B + '/version')).json();
  assert(typeof v.version === 'string', 'version');
  const ui = await fetch(B + '/');
  eq(ui.status, 200, 'ui');
  assert(ui.headers.get('content-type').startsWith('text/html'), 'html');
  eq((await fetch(B + '/health', { method: 'HEAD' })).status, 200, 'HEAD');
});

test('404 route, 405 method, 400 for bad bodies', async () => {
  isError(await post(B, '/v1/nothing', {}), 404, 'invalid_request_error');
  const r = await fetch(B + '/v1/completions');
  eq(r.status, 405, 'GET on a POST route');
  eq(r.headers.get('allow'), 'POST', 'Allow header');
  isError(await post(B, '/v1/completions', '{"prompt": "x",'), 400);
  isError(await post(B, '/v1/completions', '[1,2]'), 400);
  isError(await post(B, '/v1/completions', ''), 400);
  isError(await post(B, '/v1/completions', { prompt: 'x', max_tokens: 'ten' }), 400);
  isError(await post(B, '/v1/completions', { prompt: 'x', max_tokens: 1.5 }), 400);
  isError(await post(B, '/v1/completions', { prompt: 'x', n: 0 }), 400);
  isError(await post(B, '/v1/completions', { prompt: 'x', top_p: 0 }), 400);
  isError(await post(B, '/v1/completions', { prompt: 'x', stream_options: { include_usage: true } }), 400);
  isError(await post(B, '/v1/completions', { prompt: [1, 'a'] }), 400);
  isError(await post(B, '/v1/completions', { prompt: [5, 300] }), 400); // id outside the vocab
  isError(await post(B, '/v1/completions', { prompt: 'x', frobnicate: 1 }), 400);
  isError(await post(B, '/v1/completions', { prompt: 'x', suffix: 'y' }), 400);
  isError(await post(B, '/v1/completions', { prompt: 'x', logit_bias: { 999: 1 } }), 400);
  isError(await post(B, '/v1/completions', {}), 400);
  isError(await post(B, '/v1/chat/completions', { messages: [{ role: 'wizard', content: 'x' }] }), 400);
  isError(await post(B, '/v1/chat/completions', { messages: [{ role: 'user', content: 5 }] }), 400);
  isError(await post(B, '/v1/chat/completions', { messages: [{ role: 'user', content: [{ type: 'image_url' }] }] }), 400);
  isError(await post(B, '/v1/completions', { model: 'other', prompt: 'x' }), 404);
  const r2 = await post(B, '/v1/completions', { prompt: Array(4200).fill(5), max_tokens: 1 });
  isError(r2, 400);
  eq(r2.json.error.code, 'context_length_exceeded', 'code');
  // still serving
  eq((await post(B, '/v1/completions', { prompt: 'x', max_tokens: 1 })).status, 200, 'serves afterwards');
});

test('a body that is not UTF-8 is a 400 naming the first bad byte (RFC 8259), on every JSON route', async () => {
  // Oracle: TextDecoder with fatal: true (WHATWG UTF-8, the same well-formedness
  // as Unicode's Table 3-7). The first bad byte is the end of the longest prefix
  // that decodes: a cut-short sequence is invalid at its first byte.
  const dec = new TextDecoder('utf-8', { fatal: true });
  const ok = (b) => { try { dec.decode(b); return true; } catch { return false; } };
  const firstBad = (b) => { for (let p = b.length; p >= 0; p--) if (ok(b.subarray(0, p))) return p === b.length ? -1 : p; };
  const head = new TextEncoder().encode('{"prompt": "'), tail = new TextEncoder().encode('"}');
  let seed = 12345;
  const rnd = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
  const picks = [0x41, 0x7f, 0x80, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xa0, 0x9f, 0xed, 0xef, 0xf0, 0x90, 0x8f,
                 0xf4, 0xf5, 0xff, 0xe2, 0x82, 0xac, 0xc3, 0xa9];
  let invalid = 0;
  for (let i = 0; i < 150; i++) {
    const s = Uint8Array.from({ length: 1 + rnd(10) }, () => picks[rnd(picks.length)]);
    const body = new Uint8Array([...head, ...s, ...tail]);
    const want = firstBad(s);
    const r = await post(B, i % 2 ? '/tokenize' : '/v1/completions', body);
    if (want < 0) {
      assert(r.status !== 400 || !/UTF-8/.test(r.text), 'valid bytes ' + Array.from(s) + ' refused: ' + r.text);
      continue;
    }
    invalid++;
    isError(r, 400, 'invalid_request_error');
    const m = /byte (\d+)/.exec(r.json.error.message);
    assert(m, 'message names the byte: ' + r.json.error.message);
    eq(Number(m[1]), head.length + want, 'offset for bytes ' + Array.from(s, (x) => x.toString(16)));
  }
  assert(invalid > 50 && invalid < 150, 'both kinds drawn: ' + invalid + ' invalid');
  // chat messages too, and the server keeps serving
  const chat = new Uint8Array([...new TextEncoder().encode('{"messages": [{"role": "user", "content": "a'), 0xc3, 0x28,
                               ...new TextEncoder().encode('"}], "max_tokens": 1}')]);
  isError(await post(B, '/v1/chat/completions', chat), 400, 'invalid_request_error');
  eq((await post(B, '/v1/completions', { prompt: 'caf\u00e9', max_tokens: 1 })).status, 200, 'serves afterwards');
});

test('413 past --max-body-bytes (Content-Length and chunked)', async () => {
  const big = JSON.stringify({ prompt: 'a'.repeat(17000), max_tokens: 1 });
  isError(await post(B, '/v1/completions', big), 413);
  const body = new ReadableStream({
    start(c) {
      for (let i = 0; i < 20; i++) c.enqueue(new TextEncoder().encode(i ? 'a'.repeat(1000) : '{"prompt":"'));
      c.enqueue(new TextEncoder().encode('"}'));
      c.close();
    },
  });
  const r = await fetch(B + '/v1/completions', { method: 'POST', body, duplex: 'half',
                                                 headers: { 'content-type': 'application/json' } });
  eq(r.status, 413, 'chunked upload');
  await r.text();
});

// Raw HTTP on a socket: writes head, then bodyBytes bytes of 'a' in 64 KiB
// writes. By default nothing is read until every byte is written, as HTTP
// libraries that send the whole request before reading the answer do
// (Python's http.client, curl without Expect); readWhileWriting reads
// throughout instead. Then reads until the server closes. Resolves to what
// was read, the bytes written and the socket error, if any.
async function rawExchange(head, bodyBytes = 0, { readWhileWriting = false, timeoutMs = 30000 } = {}) {
  const sock = net.connect({ port: srv.port, host: '127.0.0.1', allowHalfOpen: true });
  const chunks = [];
  let error = null, written = 0, ended = false;
  sock.setMaxListeners(0);
  sock.on('error', (e) => { error = error || e; });
  const closed = new Promise((r) => sock.on('close', r));
  await new Promise((r, j) => { sock.once('connect', r); sock.once('error', j); });
  const read = () => sock.on('data', (d) => chunks.push(d));
  if (readWhileWriting) read();
  else sock.pause();
  sock.on('end', () => { ended = true; sock.end(); });
  sock.write(head);
  const chunk = Buffer.alloc(1 << 16, 0x61);
  while (written < bodyBytes && !error && !sock.destroyed && !ended) {
    const n = Math.min(chunk.length, bodyBytes - written);
    written += n;
    if (!sock.write(n === chunk.length ? chunk : chunk.subarray(0, n)))
      await new Promise((r) => { sock.once('drain', r); sock.once('close', r); });
  }
  if (!readWhileWriting) {
    read();
    sock.resume();
  }
  const timer = setTimeout(() => sock.destroy(new Error('no close within ' + timeoutMs + ' ms')), timeoutMs);
  await closed;
  clearTimeout(timer);
  return { text: Buffer.concat(chunks).toString('latin1'), written, error };
}

// The status and, when the response is complete (Content-Length bytes of
// body after the head), its body; null when it is cut short.
function parseResponse(text) {
  const m = /^HTTP\/1\.[01] (\d{3}) [^\r\n]*\r\n/.exec(text);
  const end = text.indexOf('\r\n\r\n');
  if (!m || end < 0) return null;
  const cl = /\r\ncontent-length: *(\d+)\r\n/i.exec(text.slice(0, end + 2));
  const body = text.slice(end + 4);
  if (!cl || body.length !== Number(cl[1])) return null;
  return { status: Number(m[1]), body };
}

test('an early 413 reaches a client still sending a 96 MiB body (lingering close), then the server serves on', async () => {
  const total = 96 << 20; // past --max-body-bytes (16 KiB): answered from Content-Length, before the body
  const head = `POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${total}\r\n\r\n`;
  for (const readWhileWriting of [false, true]) {
    const r = await rawExchange(head, total, { readWhileWriting });
    const what = (readWhileWriting ? 'reading while writing' : 'writing all, then reading') +
                 `: ${r.written} bytes written, error ${r.error && r.error.code}`;
    eq(r.error, null, 'no EPIPE / ECONNRESET, ' + what);
    if (!readWhileWriting) eq(r.written, total, 'the whole body went out, ' + what);
    const res = parseResponse(r.text);
    assert(res, 'a complete response, ' + what + ': ' + JSON.stringify(r.text.slice(0, 200)));
    eq(res.status, 413, 'status, ' + what);
    eq(JSON.parse(res.body).error.code, 'request_too_large', 'error code');
  }
  // the lingering is bounded: past 256 MiB of discarded body the server resets the connection
  const huge = 320 << 20;
  const cut = await rawExchange(head.replace(String(total), String(huge)), huge);
  assert(cut.error && cut.written < huge, `cut off: ${cut.written} of ${huge} bytes written, error ${cut.error}`);
  assert(cut.written >= 256 << 20, `not before 256 MiB: ${cut.written}`);
  // the same for an answer decided at the headers for another reason: an unknown route
  const r = await rawExchange(`POST /v1/nope HTTP/1.1\r\nHost: x\r\nContent-Length: ${8 << 20}\r\n\r\n`, 8 << 20);
  eq(r.error, null, 'no reset after a 404 with a body in flight');
  eq((parseResponse(r.text) || {}).status, 404, '404 read whole: ' + JSON.stringify(r.text.slice(0, 100)));
  eq((await fetch(B + '/health')).status, 200, 'serves afterwards');
});

test('a lingering close ends 5 s after the client last sent a byte', async () => {
  const sock = net.connect({ port: srv.port, host: '127.0.0.1', allowHalfOpen: true });
  let text = '', error = null;
  sock.on('data', (d) => { text += d.toString('latin1'); });
  sock.on('error', (e) => { error = error || e; });
  await new Promise((r) => sock.once('connect', r));
  const piece = Buffer.alloc(1 << 16, 0x61);
  sock.write(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: ${64 << 20}\r\n\r\n`);
  sock.write(piece);
  await sleep(1000);
  eq((parseResponse(text) || {}).status, 413, 'the 413 arrived: ' + JSON.stringify(text.slice(0, 80)));
  sock.write(piece); // still lingering: read and thrown away
  await sleep(1000);
  eq(error, null, 'no reset while lingering');
  await sleep(5500); // past SRV_LINGER_IDLE since the last byte: the server has closed the socket
  sock.write(piece);
  await sleep(500);
  sock.write(piece);
  await sleep(500);
  assert(error && /ECONNRESET|EPIPE/.test(error.code), 'reset once the linger ended: ' + (error && error.code));
  sock.destroy();
});

test('requests that are not HTTP: 400 before the close where microhttpd 0.9.75 can tell, never a hang', async () => {
  const bad = [
    ['no HTTP version', 'GET /\r\n\r\n'],
    ['two words', 'hello world\r\n\r\n'],
    ['a version that is not HTTP', 'GET / FOO/1.1\r\n\r\n'],
    ['a header line without a colon', 'GET /health HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n'],
    ['two different Content-Lengths', 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n' +
     'Content-Length: 7\r\n\r\nhello'],
    ['a chunk size that is not hex', 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n'],
  ];
  for (const [what, req] of bad) {
    const r = await rawExchange(req, 0, { timeoutMs: 10000 });
    const res = parseResponse(r.text);
    assert(res, what + ': a complete response before the close: ' + JSON.stringify(r.text.slice(0, 120)));
    eq(res.status, 400, what);
  }
  // microhttpd 0.9.75 answers a Content-Length that is not a number with a
  // 400 whose head it sends twice (parse_connection_headers' error answer,
  // then the state it set is overwritten): the status is right, the framing
  // is not, so only the status line is checked here.
  const r = await rawExchange('POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n', 0,
                              { timeoutMs: 10000 });
  assert(/^HTTP\/1\.1 400 /.test(r.text), 'Content-Length abc: ' + JSON.stringify(r.text.slice(0, 80)));
  // A request line without a space (or binary such as a TLS ClientHello) is
  // closed by microhttpd 0.9.75 without an answer (parse_initial_message_line
  // returns MHD_NO, "serious error"; docs/http-edges.md says why): the connection must
  // still end promptly, and anything sent must be a 400.
  for (const [what, req] of [['one word', 'GARBAGE\r\n\r\n'],
                             ['a TLS ClientHello', '\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03' + 'x'.repeat(32) + '\n']]) {
    const t0 = Date.now();
    const r = await rawExchange(req, 0, { timeoutMs: 10000 });
    assert(r.text === '' || (parseResponse(r.text) || {}).status === 400, what + ': ' + JSON.stringify(r.text.slice(0, 80)));
    assert(Date.now() - t0 < 2000, what + ': closed after ' + (Date.now() - t0) + ' ms');
  }
  eq((await fetch(B + '/health')).status, 200, 'serves afterwards');
});

test('/tokenize and /detokenize round trip', async () => {
  const t = await post(B, '/tokenize', { prompt: 'hello world, the end', return_token_strs: true });
  eq(t.status, 200, 'tokenize');
  eq(t.json.count, t.json.tokens.length, 'count');
  eq(t.json.max_model_len, 4096, 'max_model_len');
  eq(t.json.token_strs.length, t.json.count, 'token_strs');
  const d = await post(B, '/detokenize', { tokens: t.json.tokens });
  eq(d.json.prompt, 'hello world, the end', 'round trip');
  isError(await post(B, '/detokenize', { tokens: ['x'] }), 400);
});

test('8 concurrent streams each match their non-streamed text', async () => {
  const prompts = Array.from({ length: 8 }, (_, i) => `the ${i} world ${'x'.repeat(i)}`);
  const want = await Promise.all(prompts.map((p) => post(B, '/v1/completions', {
    prompt: p, max_tokens: 48, temperature: 0, ignore_eos: true })));
  const got = await Promise.all(prompts.map(async (p) => {
    const r = await fetch(B + '/v1/completions', { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: p, max_tokens: 48, temperature: 0, ignore_eos: true, stream: true,
                             stream_options: { include_usage: true } }) });
    eq(r.status, 200, 'status');
    assert(r.headers.get('content-type').startsWith('text/event-stream'), 'SSE content type');
    return sse(r);
  }));
  for (let i = 0; i < 8; i++) {
    const ev = got[i];
    eq(ev[ev.length - 1], '[DONE]', 'ends with [DONE]');
    const text = ev.filter((e) => e !== '[DONE]' && e.choices.length).map((e) => e.choices[0].text).join('');
    eq(text, want[i].json.choices[0].text, 'stream ' + i);
    eq(ev[ev.length - 2].usage.completion_tokens, 48, 'usage chunk');
  }
});

test('a stream sends a chunk for new tokens whose text is held back; the first-token phases add up', async () => {
  const body = { prompt: 'the held back world', max_tokens: 32, temperature: 0, ignore_eos: true };
  const want = (await post(B, '/v1/completions', body)).json.choices[0].text;
  assert(want.length > 0, 'some text');
  const names = ['request_tokenize_time_seconds', 'request_submit_wait_time_seconds', 'request_queue_time_seconds',
                 'request_prefill_time_seconds', 'request_first_byte_time_seconds',
                 'http_time_to_first_token_seconds'];
  const snap = async () => {
    const t = await (await fetch(B + '/metrics')).text();
    return Object.fromEntries(names.map((n) => [n, [metricIn(t, 'mfaserve:' + n + '_sum'),
                                                    metricIn(t, 'mfaserve:' + n + '_count')]]));
  };
  const before = await snap();
  // every prefix of the output is a prefix of this stop string, so the whole text is held back to the end
  const r = await fetch(B + '/v1/completions', { method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...body, stream: true, stop: [want + '\u0001'] }) });
  const ev = (await sse(r)).filter((e) => e !== '[DONE]' && e.choices.length);
  assert(ev.length >= 2, `chunks before the last (${ev.length} chunks)`);
  for (const e of ev.slice(0, -1)) eq(e.choices[0].text, '', 'held-back text is not sent early');
  eq(ev.map((e) => e.choices[0].text).join(''), want, 'the text, once');
  await sleep(50); // the queue time is observed with the request's last event
  const after = await snap();
  const d = {};
  for (const n of names) {
    eq(after[n][1] - before[n][1], 1, n + ' observed once');
    d[n] = after[n][0] - before[n][0];
    assert(d[n] >= 0 && d[n] < 5, `${n}: ${d[n]} s`);
  }
  const parts = d.request_tokenize_time_seconds + d.request_submit_wait_time_seconds +
    d.request_queue_time_seconds + d.request_prefill_time_seconds + d.request_first_byte_time_seconds;
  assert(parts <= d.http_time_to_first_token_seconds + 1e-3 && parts > 0.5 * d.http_time_to_first_token_seconds,
         `phases ${parts} s vs arrival to first byte ${d.http_time_to_first_token_seconds} s`);
  const t = await (await fetch(B + '/metrics')).text();
  eq(metricTypes(t)['vllm:request_prefill_time_seconds'], 'histogram', "vLLM's prefill histogram");
  eq(metricIn(t, 'vllm:request_prefill_time_seconds_count'), metricIn(t, 'mfaserve:request_prefill_time_seconds_count'),
     'the same under both names');
});

async function abortCount(want) { // the loop counts a request once its last event arrives
  const t = Date.now();
  let n;
  while ((n = await metric(B, 'mfaserve:request_success_total', 'finished_reason="abort"')) < want &&
         Date.now() - t < 3000) await sleep(20);
  return n;
}

async function cacheStats() { return (await fetch(B + '/v1/cache/stats')).json(); }

test('/v1/cache/stats shape', async () => {
  const c = await cacheStats();
  for (const k of ['model', 'attention', 'block_size', 'kv_bytes_per_token', 'max_model_len', 'blocks', 'usage',
                   'block_states', 'sequences', 'requests', 'prefix_cache', 'tokens', 'preemptions', 'time'])
    assert(k in c, 'field ' + k);
  eq(c.attention, 'mfa-kr', 'attention');
  eq(c.block_states.length, c.blocks.total, 'one char per block');
  assert(/^[0-9]*$/.test(c.block_states), 'digits');
  eq(c.blocks.total, c.blocks.used + c.blocks.cached + c.blocks.free, 'blocks add up');
});

test('a client that disconnects mid-stream cancels its request and frees its blocks', async () => {
  const abortedBefore = await metric(B, 'mfaserve:request_success_total', 'finished_reason="abort"');
  const genBefore = await metric(B, 'mfaserve:generation_tokens_total');
  const ac = new AbortController();
  const r = await fetch(B + '/v1/completions', { method: 'POST', signal: ac.signal,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'the', max_tokens: 4000, temperature: 0, ignore_eos: true, stream: true }) });
  let seen = 0, running = null;
  try {
    await sse(r, async (ev) => {
      if (ev !== '[DONE]' && ev.choices.length) seen++;
      if (seen < 3) return true;
      // the scheduler snapshots the cache map when asked, at its next step: ask until it shows up
      const t = Date.now();
      do {
        running = await cacheStats();
        if (running.sequences.length) break;
        await sleep(10);
      } while (Date.now() - t < 2000);
      return false; // leaving the loop cancels the body: the connection closes
    });
    ac.abort();
  } catch {}
  assert(seen >= 1, 'got tokens first');
  assert(running.sequences.length === 1 && running.blocks.used > 0,
         'a sequence held blocks while streaming: ' + JSON.stringify({ ...running, block_states: undefined }));
  let c;
  const t0 = Date.now();
  do {
    await sleep(20);
    c = await cacheStats();
  } while ((c.sequences.length || c.blocks.used || c.requests.running) && Date.now() - t0 < 3000);
  eq(c.sequences.length, 0, 'no sequence left');
  eq(c.blocks.used, 0, 'no block used');
  eq(c.requests.running, 0, 'nothing running');
  const gen = (await metric(B, 'mfaserve:generation_tokens_total')) - genBefore;
  assert(gen < 4000, `generation stopped early (${gen} of 4000 tokens)`);
  eq(await abortCount(abortedBefore + 1), abortedBefore + 1, 'counted as abort');
});

test('a client that disconnects while waiting for a non-streamed answer cancels it', async () => {
  const abortedBefore = await metric(B, 'mfaserve:request_success_total', 'finished_reason="abort"');
  const ac = new AbortController();
  const p = fetch(B + '/v1/completions', { method: 'POST', signal: ac.signal,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'hello', max_tokens: 4000, temperature: 0, ignore_eos: true }) }).catch(() => null);
  let c;
  const t0 = Date.now();
  do { // wait until it runs
    await sleep(10);
    c = await cacheStats();
  } while (!c.requests.running && Date.now() - t0 < 3000);
  assert(c.requests.running === 1, 'it ran');
  ac.abort();
  await p;
  do {
    await sleep(20);
    c = await cacheStats();
  } while ((c.requests.running || c.blocks.used) && Date.now() - t0 < 5000);
  eq(c.requests.running, 0, 'nothing running');
  eq(c.blocks.used, 0, 'no block used');
  eq(await abortCount(abortedBefore + 1), abortedBefore + 1, 'counted as abort');
});

test('/metrics: names, types, histograms; promtool check metrics', async () => {
  const res = await fetch(B + '/metrics');
  eq(res.status, 200, 'status');
  assert(res.headers.get('content-type').startsWith('text/plain'), 'content type');
  const t = await res.text();
  const types = metricTypes(t);
  const want = {
    num_requests_running: 'gauge', num_requests_waiting: 'gauge', kv_cache_usage_perc: 'gauge',
    kv_cache_num_blocks: 'gauge', kv_cache_used_blocks: 'gauge', kv_cache_cached_blocks: 'gauge',
    kv_cache_bytes_per_token: 'gauge', prompt_tokens_total: 'counter', generation_tokens_total: 'counter',
    num_preemptions_total: 'counter', prefix_cache_queries_total: 'counter', prefix_cache_hits_total: 'counter',
    request_success_total: 'counter', time_to_first_token_seconds: 'histogram',
    inter_token_latency_seconds: 'histogram', e2e_request_latency_seconds: 'histogram',
    request_queue_time_seconds: 'histogram', engine_steps_total: 'counter', engine_step_seconds_total: 'counter',
    engine_forward_seconds_total: 'counter',
  };
  for (const [k, v] of Object.entries(want)) eq(types['mfaserve:' + k], v, 'type of ' + k);
  // the step clock: steps ran, each took time, and the forward pass is a part of a step's time
  const steps = metricIn(t, 'mfaserve:engine_steps_total'), stepS = metricIn(t, 'mfaserve:engine_step_seconds_total');
  const fwdS = metricIn(t, 'mfaserve:engine_forward_seconds_total');
  assert(steps > 0 && stepS > 0 && fwdS > 0, `step counters ${steps} ${stepS} ${fwdS}`);
  assert(fwdS <= stepS, `forward ${fwdS} s within the steps' ${stepS} s`);
  assert((await metric(B, 'mfaserve:time_to_first_token_seconds_count')) > 0, 'ttft observed');
  assert((await metric(B, 'mfaserve:inter_token_latency_seconds_count')) > 0, 'itl observed');
  assert((await metric(B, 'mfaserve:generation_tokens_total')) > 0, 'generation counted');
  assert((await metric(B, 'mfaserve:request_success_total', 'finished_reason="length"')) > 0, 'length counted');
  const u = await metric(B, 'mfaserve:kv_cache_usage_perc');
  assert(u >= 0 && u <= 1, 'usage fraction');
  const pc = spawnSync('promtool', ['check', 'metrics'], { input: t, encoding: 'utf8' });
  if (pc.error) {
    console.log('     (promtool not installed: apt-get install prometheus to run `promtool check metrics`)');
    return;
  }
  // promtool's linter rejects ':' in names, which the required prefix (like vLLM's "vllm:") has;
  // everything else must pass, and the text must parse.
  const problems = (pc.stdout + pc.stderr).split('\n').filter((l) => l.trim() &&
    !l.endsWith("metric names should not contain ':'"));
  eq(problems, [], 'promtool problems');
  const broken = spawnSync('promtool', ['check', 'metrics'], { input: 'x{ 1\n', encoding: 'utf8' });
  assert(broken.status !== 0, 'promtool rejects broken text (sanity)');
});

test("vLLM's names (--metrics-compat vllm, the default): what routers read, equal to ours; none turns them off", async () => {
  const t = await (await fetch(B + '/metrics')).text();
  const types = metricTypes(t);
  const want = {
    num_requests_running: 'gauge', num_requests_waiting: 'gauge', kv_cache_usage_perc: 'gauge',
    gpu_cache_usage_perc: 'gauge', prompt_tokens_total: 'counter', generation_tokens_total: 'counter',
    num_preemptions_total: 'counter', prefix_cache_queries_total: 'counter', prefix_cache_hits_total: 'counter',
    request_success_total: 'counter', time_to_first_token_seconds: 'histogram',
    inter_token_latency_seconds: 'histogram', time_per_output_token_seconds: 'histogram',
    e2e_request_latency_seconds: 'histogram', request_queue_time_seconds: 'histogram',
    cache_config_info: 'gauge', lora_requests_info: 'gauge',
  };
  for (const [k, v] of Object.entries(want)) eq(types['vllm:' + k], v, 'type of vllm:' + k);
  // the same values as the mfaserve: series of the same scrape (nothing runs between them here)
  const val = (name, labels = '') => metricIn(t, name, labels);
  for (const k of ['kv_cache_usage_perc', 'generation_tokens_total', 'prompt_tokens_total', 'num_requests_waiting',
                   'time_to_first_token_seconds_count', 'e2e_request_latency_seconds_sum'])
    eq(val('vllm:' + k), val('mfaserve:' + k), k + ' under both names');
  eq(val('vllm:gpu_cache_usage_perc'), val('vllm:kv_cache_usage_perc'), 'older usage name');
  eq(val('vllm:request_success_total', 'finished_reason="length"'),
     val('mfaserve:request_success_total', 'finished_reason="length"'), 'finished by reason');
  assert(val('vllm:generation_tokens_total') > 0, 'something was generated before this test');
  // labels as vLLM writes them: model_name on the series, the cache's shape on cache_config_info
  assert(/^vllm:num_requests_waiting\{model_name="testmodel"\} /m.test(t), 'model_name label');
  const cc = /^vllm:cache_config_info\{([^}]*)\} 1$/m.exec(t);
  assert(cc, 'cache_config_info line');
  const lab = Object.fromEntries([...cc[1].matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
  eq(Number(lab.num_gpu_blocks), val('mfaserve:kv_cache_num_blocks'), 'num_gpu_blocks is our block count');
  eq(lab.block_size, String((await (await fetch(B + '/v1/cache/stats')).json()).block_size), 'block_size');
  eq(lab.cache_dtype, 'float16', 'cache_dtype');
  const lora = /^vllm:lora_requests_info\{max_lora="0",running_lora_adapters="",waiting_lora_adapters=""\} (\S+)$/m.exec(t);
  assert(lora && Math.abs(Number(lora[1]) - Date.now() / 1000) < 60, 'lora_requests_info: no adapters, the time');
  const off = await startServer(bin, model, ['--metrics-compat', 'none']);
  try {
    const t2 = await (await fetch(off.base + '/metrics')).text();
    assert(!/^vllm:/m.test(t2) && /^mfaserve:num_requests_waiting/m.test(t2), 'none: no vllm: series, ours stay');
  } finally {
    await off.stop();
  }
  const bad = spawnSync(bin, ['serve', '--model', model, '--metrics-compat', 'tgi'], { encoding: 'utf8' });
  eq(bad.status, 2, 'an unknown --metrics-compat is a usage error');
  assert(/expected vllm or none/.test(bad.stderr), 'says what it expects: ' + bad.stderr);
});

test('--kv-cache-dtype int8: the pool, /v1/cache/stats, /metrics and the log say int8 and its real bytes per token', async () => {
  const info = JSON.parse(spawnSync(bin, ['info', '--model', model, '--json'], { encoding: 'utf8' }).stdout);
  const mem = ['--kv-cache-memory', '8M'];
  const f16 = await startServer(bin, model, mem);
  const i8 = await startServer(bin, model, [...mem, '--kv-cache-dtype', 'int8']);
  try {
    const a = await (await fetch(f16.base + '/v1/cache/stats')).json();
    const c = await (await fetch(i8.base + '/v1/cache/stats')).json();
    eq(a.kv_dtype, 'f16', 'default dtype');
    eq(c.kv_dtype, 'int8', 'int8 dtype');
    eq(a.kv_bytes_per_token, info.kv_bytes_per_token_f16, 'f16 bytes per token');
    eq(c.kv_bytes_per_token, info.kv_bytes_per_token_int8, 'int8 bytes per token');
    // values plus one F16 scale per group, per layer
    eq(c.kv_bytes_per_token, info.num_layers * (info.kv_elems_per_token_per_layer * (1 + 2 / info.kv_int8_group)),
       'int8 bytes = elements + scales');
    // the same memory holds proportionally more blocks (each layer's region of a block is padded to 64 bytes, int8 32)
    const region = (perTok, al) => Math.ceil((c.block_size * perTok) / info.num_layers / al) * al;
    const ratio = c.blocks.total / a.blocks.total,
      want = region(a.kv_bytes_per_token, 64) / region(c.kv_bytes_per_token, 32);
    assert(Math.abs(ratio - want) / want < 0.05, `blocks ratio ${ratio} vs bytes ratio ${want}`);
    const t = await (await fetch(i8.base + '/metrics')).text();
    assert(/^mfaserve:kv_cache_info\{model_name="[^"]*",dtype="int8"\} 1$/m.test(t), 'mfaserve:kv_cache_info dtype');
    assert(/^vllm:cache_config_info\{[^}]*cache_dtype="int8"/m.test(t), 'vllm cache_dtype');
    assert(/^mfaserve:kv_cache_bytes_per_token\{[^}]*\} (\d+)/m.exec(t)[1] == c.kv_bytes_per_token, 'bytes gauge');
    const r = await post(i8.base, '/v1/completions', { prompt: 'hello there', max_tokens: 8, temperature: 0 });
    eq(r.status, 200, 'an int8 pool serves');
    eq(r.json.usage.completion_tokens, 8, 'generates');
    assert(/KV pool: .*bytes per token \(int8\)/.test(i8.log()), 'start-up log names the dtype');
  } finally {
    await f16.stop();
    await i8.stop();
  }
  const bad = spawnSync(bin, ['serve', '--model', model, '--kv-cache-dtype', 'int4'], { encoding: 'utf8' });
  eq(bad.status, 2, 'an unknown dtype is a usage error');
  assert(/expected f16, f32 or int8/.test(bad.stderr), 'says what it expects: ' + bad.stderr);
});

await run(async () => {
  const r = await srv.stop();
  eq(r.code, 0, 'exit status after SIGTERM');
});
