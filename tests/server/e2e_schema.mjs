// e2e_schema.mjs: every body the OpenAI routes answer, field for field
// against OpenAI's published schemas (openai_schemas.json, vendored from
// openai/openai-openapi by make_openai_schemas.mjs; compiled by
// openai_schema.mjs with ajv): completions and chat, whole and streamed
// (every chunk), with echo, logprobs, n, stop and include_usage; /v1/models
// and /v1/models/{id}; and the errors: bad bodies and parameters, unknown
// model and route, 405, 401, 413, 429, 503 while draining, 500 and the error
// events that end a stream. The wire bytes are checked, not what a client
// library makes of them.
//
// Where OpenAI's live API departs from its own document the check is widened
// at that one spot only (openai_schema.mjs's DEVIATIONS); the last tests show
// the validator rejects broken copies of real responses, and that each
// deviation is needed by some real body (none is dead weight).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { args, here, startServer, test, run, sse, assert, eq, sleep } from './lib.mjs';

if (!existsSync(join(here, 'node_modules', 'ajv'))) {
  console.log('SKIP: npm ajv is not installed; run: npm ci --prefix tests/server');
  process.exit(77);
}
const { makeValidator, DEVIATIONS, vendored } = await import('./openai_schema.mjs');
const { bin, model } = args();

const V = makeValidator();
// the same validator with one deviation left out, for each deviation
const without = DEVIATIONS.map((d) => ({ name: d.name, v: makeValidator({ skip: [d.name] }) }));
const needed = new Map(); // deviation -> the first body that needed it
const counts = {};
const samples = {}; // real bodies, kept for the negative tests

function check(name, body, what) {
  V.check(name, body, what);
  counts[name] = (counts[name] || 0) + 1;
  for (const w of without)
    if (!needed.has(w.name) && w.v.errors(name, body)) needed.set(w.name, `${what}: ${w.v.errors(name, body)}`);
}

const KEY = 'schema-key';
const AUTH = { authorization: `Bearer ${KEY}` };
const M = 'testmodel';
const srv = await startServer(bin, model, ['--max-model-len', '512', '--max-body-bytes', '65536'],
                              { env: { MFASERVE_API_KEY: KEY } });
const B = srv.base;

async function call(path, body, { method = body === undefined ? 'GET' : 'POST', headers = AUTH, base = B } = {}) {
  const r = await fetch(base + path, {
    method,
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await r.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: r.status, ctype: r.headers.get('content-type') || '', text, json };
}

// a 200 JSON body that must match `schema`
async function ok(path, body, schema, what) {
  const r = await call(path, body);
  eq(r.status, 200, `${what}: status (${r.text.slice(0, 300)})`);
  assert(r.ctype.startsWith('application/json'), `${what}: content-type ${r.ctype}`);
  check(schema, r.json, what);
  return r.json;
}

// an error answer: its status and an ErrorResponse body
function isError(r, status, what) {
  eq(r.status, status, `${what}: status (${r.text.slice(0, 300)})`);
  assert(r.ctype.startsWith('application/json'), `${what}: content-type ${r.ctype}`);
  assert(r.json !== undefined, `${what}: body is JSON: ${r.text}`);
  check('ErrorResponse', r.json, what);
  return r.json.error;
}

// A stream's events: each chunk checked against `schema`, each error event
// against ErrorResponse; returns { chunks, errors }.
async function stream(path, body, schema, what, { base = B, allowErrors = false, onEvent } = {}) {
  const r = await fetch(base + path, { method: 'POST', headers: { 'content-type': 'application/json', ...AUTH },
                                       body: JSON.stringify({ ...body, stream: true }) });
  if (r.status !== 200) throw new Error(`${what}: status ${r.status}: ${await r.text()}`);
  assert((r.headers.get('content-type') || '').startsWith('text/event-stream'), `${what}: content-type`);
  const ev = await sse(r, onEvent);
  eq(ev[ev.length - 1], '[DONE]', `${what}: ends with [DONE]`);
  const chunks = [], errors = [];
  for (const [i, e] of ev.slice(0, -1).entries()) {
    assert(e !== '[DONE]', `${what}: [DONE] only at the end`);
    if (e.error) {
      check('ErrorResponse', e, `${what}: error event`);
      errors.push(e);
    } else {
      check(schema, e, `${what}: chunk ${i}`);
      chunks.push(e);
    }
  }
  if (!allowErrors) eq(errors, [], `${what}: no error events`);
  return { chunks, errors };
}

const CMPL = 'CreateCompletionResponse', CMPL_CHUNK = 'CreateCompletionStreamResponse';
const CHAT = 'CreateChatCompletionResponse', CHAT_CHUNK = 'CreateChatCompletionStreamResponse';
const base = { model: M, temperature: 0, ignore_eos: true };
const msgs = [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hello world' }];

test('completions: plain, n, several prompts, stop, max_tokens 0, token ids', async () => {
  const r = await ok('/v1/completions', { ...base, prompt: 'hello world', max_tokens: 5 }, CMPL, 'plain');
  eq(r.choices[0].finish_reason, 'length', 'finish_reason');
  samples.completion = r;
  const n = await ok('/v1/completions', { ...base, prompt: ['hello', 'the cat'], max_tokens: 4, n: 2,
                                          temperature: 0.8, seed: 7 }, CMPL, 'two prompts, n=2');
  eq(n.choices.map((c) => c.index), [0, 1, 2, 3], 'indexes');
  const full = r.choices[0].text;
  const stop = [...full].slice(1, 3).join('');
  if (stop && !stop.includes('\uFFFD')) {
    const s = await ok('/v1/completions', { ...base, prompt: 'hello world', max_tokens: 5, stop: [stop] }, CMPL,
                       'stop');
    eq(s.choices[0].finish_reason, 'stop', 'stop: finish_reason');
  }
  const z = await ok('/v1/completions', { ...base, prompt: 'x', max_tokens: 0 }, CMPL, 'max_tokens 0');
  eq(z.choices[0].text, '', 'nothing generated');
  await ok('/v1/completions', { ...base, prompt: [5, 6, 7], max_tokens: 2, logprobs: 0,
                                return_tokens_as_token_ids: true }, CMPL, 'token ids, logprobs 0');
});

test('completions: logprobs, echo (the first prompt token has no logprob)', async () => {
  const r = await ok('/v1/completions', { ...base, prompt: 'the', max_tokens: 4, logprobs: 3 }, CMPL, 'logprobs 3');
  eq(r.choices[0].logprobs.tokens.length, 4, 'logprobs present');
  samples.completionLogprobs = r;
  const e = await ok('/v1/completions', { ...base, prompt: 'hello world the cat', max_tokens: 0, echo: true,
                                          logprobs: 1 }, CMPL, 'echo, max_tokens 0, logprobs 1');
  eq(e.choices[0].logprobs.token_logprobs[0], null, 'echo: first token_logprob');
  eq(e.choices[0].logprobs.top_logprobs[0], null, 'echo: first top_logprobs');
  samples.echo = e;
  await ok('/v1/completions', { ...base, prompt: ['hello', 'the cat'], max_tokens: 3, echo: true, logprobs: 2, n: 2 },
           CMPL, 'echo with generation, two prompts, n=2');
  await ok('/v1/completions', { ...base, prompt: 'hello', max_tokens: 3, echo: true }, CMPL, 'echo without logprobs');
});

test('completions streamed: plain, include_usage, continuous usage, logprobs, echo, n, stop', async () => {
  const p = { ...base, prompt: 'the world is', max_tokens: 12 };
  const a = await stream('/v1/completions', p, CMPL_CHUNK, 'plain stream');
  assert(a.chunks.length >= 2, 'several chunks');
  assert(a.chunks.slice(0, -1).every((c) => c.choices[0].finish_reason === null), 'finish_reason null until the end');
  eq(a.chunks[a.chunks.length - 1].choices[0].finish_reason, 'length', 'last finish_reason');
  samples.completionChunk = a.chunks[0];
  const u = await stream('/v1/completions', { ...p, stream_options: { include_usage: true } }, CMPL_CHUNK,
                         'include_usage');
  const last = u.chunks[u.chunks.length - 1];
  eq(last.choices, [], 'usage chunk: no choices');
  eq(last.usage.completion_tokens, 12, 'usage chunk');
  assert(u.chunks.slice(0, -1).every((c) => c.usage === null), 'usage null before the last chunk');
  await stream('/v1/completions', { ...p, stream_options: { continuous_usage_stats: true } }, CMPL_CHUNK,
               'continuous_usage_stats');
  const l = await stream('/v1/completions', { ...p, logprobs: 2 }, CMPL_CHUNK, 'stream logprobs');
  assert(l.chunks.some((c) => c.choices[0].logprobs && c.choices[0].logprobs.tokens.length), 'logprobs in chunks');
  const e = await stream('/v1/completions', { ...p, max_tokens: 3, echo: true, logprobs: 1 }, CMPL_CHUNK,
                         'stream echo + logprobs');
  // the echo chunk carries the whole prompt's logprobs, as the unstreamed answer does (the server once sent it
  // before the prefill had computed them: all null)
  const whole = await ok('/v1/completions', { ...p, max_tokens: 3, echo: true, logprobs: 1 }, CMPL, 'echo + logprobs');
  const n = whole.choices[0].logprobs.tokens.length - 3;
  const lp = (c) => c.choices[0].logprobs.token_logprobs.slice(0, n).map((x) => x === null ? x : x.toFixed(4));
  eq(lp(e.chunks[0]), lp(whole), 'echo chunk: the prompt\'s logprobs');
  eq(e.chunks[0].choices[0].logprobs.token_logprobs[0], null, 'echo chunk: first logprob');
  await stream('/v1/completions', { ...p, prompt: ['a', 'b c'], n: 2, temperature: 1, seed: 3 }, CMPL_CHUNK,
               'stream, two prompts, n=2');
  await stream('/v1/completions', { ...p, max_tokens: 0, echo: true, logprobs: 0 }, CMPL_CHUNK, 'stream echo only');
  await stream('/v1/completions', { ...p, stop: ['e', ' '] }, CMPL_CHUNK, 'stream stop');
});

test('chat: plain (refusal null), logprobs, n, stop, max_tokens 0', async () => {
  const r = await ok('/v1/chat/completions', { ...base, messages: msgs, max_completion_tokens: 6 }, CHAT, 'chat');
  eq(r.choices[0].message.refusal, null, 'message.refusal');
  eq(r.choices[0].logprobs, null, 'logprobs not asked');
  samples.chat = r;
  const l = await ok('/v1/chat/completions', { ...base, messages: msgs, max_tokens: 3, logprobs: true,
                                               top_logprobs: 2 }, CHAT, 'chat logprobs');
  eq(l.choices[0].logprobs.refusal, null, 'logprobs.refusal');
  eq(l.choices[0].logprobs.content.length, 3, 'logprobs.content');
  samples.chatLogprobs = l;
  await ok('/v1/chat/completions', { ...base, messages: msgs, max_tokens: 3, logprobs: true }, CHAT,
           'chat logprobs without top_logprobs');
  const n = await ok('/v1/chat/completions', { ...base, messages: msgs, max_tokens: 4, n: 3, temperature: 1, seed: 1 },
                     CHAT, 'chat n=3');
  eq(n.choices.length, 3, 'n');
  await ok('/v1/chat/completions', { ...base, messages: msgs, max_tokens: 8, stop: ['e', 'a', ' '] }, CHAT,
           'chat stop');
  await ok('/v1/chat/completions', { ...base, messages: msgs, max_tokens: 0 }, CHAT, 'chat max_tokens 0');
  await ok('/v1/chat/completions', { model: M, messages: [{ role: 'user', content: [{ type: 'text', text: 'hi' }] }],
                                     max_tokens: 3 }, CHAT, 'chat, content parts, sampled until EOS or length');
});

test('chat streamed: plain, include_usage, logprobs, n', async () => {
  const p = { ...base, messages: msgs, max_tokens: 8 };
  const a = await stream('/v1/chat/completions', p, CHAT_CHUNK, 'chat stream');
  eq(a.chunks[0].choices[0].delta.role, 'assistant', 'role delta');
  eq(a.chunks[a.chunks.length - 1].choices[0].finish_reason, 'length', 'finish chunk');
  samples.chatChunk = a.chunks[a.chunks.length - 1];
  const u = await stream('/v1/chat/completions', { ...p, stream_options: { include_usage: true } }, CHAT_CHUNK,
                         'chat include_usage');
  eq(u.chunks[u.chunks.length - 1].usage.completion_tokens, 8, 'usage chunk');
  await stream('/v1/chat/completions', { ...p, stream_options: { continuous_usage_stats: true } }, CHAT_CHUNK,
               'chat continuous_usage_stats');
  const l = await stream('/v1/chat/completions', { ...p, logprobs: true, top_logprobs: 3 }, CHAT_CHUNK,
                         'chat stream logprobs');
  const withLp = l.chunks.filter((c) => c.choices.length && c.choices[0].logprobs);
  assert(withLp.length >= 1, 'chunks with logprobs');
  for (const c of withLp) eq(c.choices[0].logprobs.refusal, null, 'chunk logprobs.refusal');
  samples.chatChunkLogprobs = withLp[0];
  await stream('/v1/chat/completions', { ...p, n: 2, temperature: 1, seed: 5 }, CHAT_CHUNK, 'chat stream n=2');
  await stream('/v1/chat/completions', { ...p, stop: ['e', ' '] }, CHAT_CHUNK, 'chat stream stop');
});

test('/v1/models and /v1/models/{id}', async () => {
  const list = await ok('/v1/models', undefined, 'ListModelsResponse', 'models list');
  eq(list.data.map((m) => m.id), [M], 'ids');
  samples.models = list;
  const one = await ok('/v1/models/' + M, undefined, 'Model', 'one model');
  eq(one.id, M, 'id');
  isError(await call('/v1/models/nope'), 404, 'unknown model id');
});

test('errors: bodies, parameters, model, route, method, key, size, context', async () => {
  const C = '/v1/completions', H = '/v1/chat/completions';
  isError(await call(C, '{"prompt": "x",'), 400, 'truncated JSON');
  isError(await call(C, '[1,2]'), 400, 'not an object');
  isError(await call(C, ''), 400, 'empty body');
  isError(await call(C, new Uint8Array([0x7b, 0x22, 0xff, 0x22, 0x7d])), 400, 'not UTF-8');
  isError(await call(C, { prompt: 'x', max_tokens: 'ten' }), 400, 'wrong type');
  isError(await call(C, { prompt: 'x', temperature: 5 }), 400, 'out of range');
  isError(await call(C, { prompt: 'x', frobnicate: 1 }), 400, 'unknown field');
  isError(await call(C, { prompt: 'x', logprobs: true }), 400, 'logprobs boolean on completions');
  isError(await call(C, { prompt: 'x', stream_options: { include_usage: true } }), 400,
          'stream_options without stream');
  isError(await call(C, {}), 400, 'no prompt');
  isError(await call(C, { prompt: 'x', max_tokens: 100000 }), 400, 'context length');
  const stream400 = await call(C, { prompt: 'x', stream: true, n: 0 });
  isError(stream400, 400, 'a stream refused before it starts');
  isError(await call(H, { messages: [] }), 400, 'no messages');
  isError(await call(H, { messages: [{ role: 'wizard', content: 'x' }] }), 400, 'bad role');
  isError(await call(H, { messages: [{ role: 'user', content: 'x' }],
                          tools: [{ type: 'retrieval' }] }), 400, 'tools');
  isError(await call(H, { messages: [{ role: 'user', content: 'x' }], logprobs: 2 }), 400, 'chat logprobs not boolean');
  isError(await call(C, { model: 'other', prompt: 'x' }), 404, 'unknown model');
  isError(await call(H, { model: 'other', messages: msgs }), 404, 'unknown model (chat)');
  isError(await call('/v1/nothing', {}), 404, 'unknown route');
  isError(await call('/v1/nothing', undefined), 404, 'unknown route (GET)');
  isError(await call(C, undefined), 405, 'GET on a POST route');
  isError(await call('/v1/models', {}), 405, 'POST on a GET route');
  isError(await call(C, { prompt: 'x' }, { headers: {} }), 401, 'no API key');
  isError(await call('/v1/models', undefined, { headers: { authorization: 'Bearer wrong' } }), 401, 'wrong API key');
  isError(await call(C, JSON.stringify({ prompt: 'a'.repeat(70000) })), 413, 'body too large');
  isError(await call('/tokenize', { prompt: 5 }), 400, '/tokenize');
  eq((await call(C, { prompt: 'x', max_tokens: 1 })).status, 200, 'serves afterwards');
});

// Limits and shutdown on a server of their own: 429 past the queue, then
// SIGTERM: 503 for new requests and a stream cut by --shutdown-timeout.
test('429, 503 while draining, and the error event that ends a stream at shutdown', async () => {
  let fresh = null; // the request sent while draining (set once SIGTERM went out)
  const s = await startServer(bin, model, ['--max-num-seqs', '1', '--max-queued-requests', '1',
                                           '--max-model-len', '4096', '--shutdown-timeout', '0.2']);
  try {
    const rs = await Promise.all(Array.from({ length: 6 }, () => call('/v1/completions', {
      prompt: 'the', max_tokens: 200, ignore_eos: true, temperature: 0 }, { base: s.base })));
    const busy = rs.filter((r) => r.status === 429);
    assert(busy.length >= 1, 'some 429: ' + rs.map((r) => r.status));
    for (const r of busy) isError(r, 429, 'queue full');
    for (const r of rs.filter((x) => x.status === 200)) check(CMPL, r.json, 'a request that got in');

    const cut = { messages: msgs, max_tokens: 4000, ignore_eos: true };
    const { chunks, errors } = await stream('/v1/chat/completions', cut, CHAT_CHUNK, 'stream cut at shutdown', {
      base: s.base, allowErrors: true,
      onEvent: async () => {
        if (fresh) return;
        fresh = 'pending';
        s.proc.kill('SIGTERM');
        // as soon as the server drains (/health says so), within the 0.2 s it gives the stream
        for (let i = 0; i < 100 && (await fetch(s.base + '/health')).status !== 503; i++) await sleep(1);
        fresh = await call('/v1/completions', { prompt: 'x', max_tokens: 2 }, { base: s.base });
      },
    });
    isError(fresh, 503, 'a new request while draining');
    eq(errors.length, 1, 'the cut stream ends with one error event');
    eq(errors[0].error.code, 'service_unavailable', 'its code');
    assert(chunks.length >= 1, 'chunks before the cut');
    assert(chunks.every((c) => c.choices.every((x) => x.finish_reason === null)), 'no finish_reason on a cut stream');
  } finally {
    // SIGTERM was sent once already (a second one stops the server at once, by design): give the
    // drain time to end before stop() sends another
    if (fresh) await Promise.race([s.exit, sleep(10000)]);
    eq((await s.stop()).code, 0, 'exit status');
  }
});

// Failures inside the server (MFASERVE_FAULT, common/fault.c): a failed engine
// step (a 500 body; an error event in a stream) and a stream whose buffer
// cannot grow (its fixed out-of-memory event, srv_gen.c's oom_tail).
test('500 and the error events of failed streams', async () => {
  const s = await startServer(bin, model, [], { env: { MFASERVE_FAULT: 'sched_step:1,sched_step:5' } });
  try {
    isError(await call('/v1/completions', { prompt: 'x', max_tokens: 5 }, { base: s.base }), 500, 'failed step');
    const { errors } = await stream('/v1/completions', { prompt: 'the', max_tokens: 20, ignore_eos: true }, CMPL_CHUNK,
                                    'stream with a failed step', { base: s.base, allowErrors: true });
    eq(errors.length, 1, 'one error event');
  } finally {
    eq((await s.stop()).code, 0, 'exit status');
  }
  const o = await startServer(bin, model, [], { env: { MFASERVE_FAULT: 'srv_sse:2' } });
  try {
    const { errors } = await stream('/v1/chat/completions', { messages: msgs, max_tokens: 300, ignore_eos: true },
                                    CHAT_CHUNK, 'stream out of memory', { base: o.base, allowErrors: true });
    eq(errors.length, 1, 'one error event');
    assert(/out of memory/.test(errors[0].error.message), 'the out-of-memory event: ' + JSON.stringify(errors[0]));
  } finally {
    eq((await o.stop()).code, 0, 'exit status');
  }
});

// The validator bites: broken copies of the real bodies above are rejected,
// each for the reason given.
test('the validator rejects broken copies of real responses', async () => {
  const broken = (name, sample, edit, want) => {
    assert(sample, `no sample for ${want}`);
    eq(V.errors(name, sample), null, `the unbroken ${want} sample is valid`);
    const b = structuredClone(sample);
    edit(b);
    const e = V.errors(name, b);
    assert(e, `${want}: a broken copy passed: ${JSON.stringify(b)}`);
    return e;
  };
  const err = await call('/v1/nothing', {});
  broken(CHAT, samples.chat, (b) => delete b.choices[0].message.refusal, 'chat: no message.refusal');
  broken(CHAT, samples.chat, (b) => { b.choices[0].message.refusal = 0; }, 'chat: refusal a number');
  broken(CHAT, samples.chat, (b) => { b.choices[0].message.role = 'user'; }, 'chat: role user');
  broken(CHAT, samples.chat, (b) => { b.choices[0].finish_reason = 'abort'; }, 'chat: finish_reason abort');
  broken(CHAT, samples.chat, (b) => { b.created = String(b.created); }, 'chat: created a string');
  broken(CHAT, samples.chat, (b) => { b.created = 1.5; }, 'chat: created not an integer');
  broken(CHAT, samples.chat, (b) => { b.object = 'chat.completion.chunk'; }, 'chat: object');
  broken(CHAT, samples.chat, (b) => delete b.usage.total_tokens, 'chat: usage.total_tokens');
  broken(CHAT, samples.chatLogprobs, (b) => delete b.choices[0].logprobs.refusal, 'chat: no logprobs.refusal');
  broken(CHAT, samples.chatLogprobs, (b) => delete b.choices[0].logprobs.content[0].top_logprobs[0].bytes,
         'chat: a top logprob without bytes');
  broken(CHAT_CHUNK, samples.chatChunkLogprobs, (b) => delete b.choices[0].logprobs.refusal,
         'chat chunk: no logprobs.refusal');
  broken(CHAT_CHUNK, samples.chatChunk, (b) => { b.choices[0].finish_reason = 'abort'; }, 'chat chunk: finish_reason');
  broken(CHAT_CHUNK, samples.chatChunk, (b) => delete b.choices[0].delta, 'chat chunk: no delta');
  broken(CHAT_CHUNK, samples.chatChunk, (b) => { b.choices[0].delta.role = 'wizard'; }, 'chat chunk: delta.role');
  broken(CMPL, samples.completion, (b) => delete b.choices[0].logprobs, 'completion: no logprobs');
  broken(CMPL, samples.completion, (b) => { b.choices[0].finish_reason = null; }, 'completion: finish_reason null');
  broken(CMPL, samples.completion, (b) => { b.usage = null; }, 'completion: usage null');
  broken(CMPL, samples.completion, (b) => { b.object = 'text_completion.chunk'; }, 'completion: object');
  broken(CMPL, samples.completionLogprobs, (b) => { b.choices[0].logprobs.token_logprobs[2] = null; },
         'completion: a null logprob of a generated token');
  broken(CMPL, samples.echo, (b) => { b.choices[0].logprobs.token_logprobs[1] = null; },
         'echo: a null logprob past the first token');
  broken(CMPL, samples.echo, (b) => { b.choices[0].logprobs.top_logprobs[2] = null; },
         'echo: null top_logprobs past the first token');
  broken(CMPL, samples.echo, (b) => { b.choices[0].logprobs.text_offset[0] = '0'; },
         'completion: text_offset a string');
  broken(CMPL_CHUNK, samples.completionChunk, (b) => { b.choices[0].finish_reason = 'abort'; },
         'completion chunk: finish_reason abort');
  broken(CMPL_CHUNK, samples.completionChunk, (b) => { b.choices[0].text = null; }, 'completion chunk: text null');
  broken('ListModelsResponse', samples.models, (b) => delete b.data[0].owned_by, 'models: no owned_by');
  broken('ListModelsResponse', samples.models, (b) => { b.object = 'models'; }, 'models: object');
  broken('ErrorResponse', err.json, (b) => delete b.error.param, 'error: no param');
  broken('ErrorResponse', err.json, (b) => { b.error.code = 404; }, 'error: code a number');
  broken('ErrorResponse', err.json, (b) => { b.error = b.error.message; }, 'error: a string');
});

test('every deviation is needed by some real body, and every schema was exercised', async () => {
  const names = DEVIATIONS.map((d) => d.name);
  eq(names.filter((n) => !needed.has(n)), [], 'deviations no real body needed');
  for (const [n, why] of needed) console.log(`     ${n} needed by ${why.slice(0, 160)}`);
  for (const name of [...vendored.roots, CMPL_CHUNK]) assert(counts[name] > 0, `nothing checked against ${name}`);
  const src = vendored.source;
  console.log(`     bodies checked: ${JSON.stringify(counts)}, against openai-openapi ${src.commit.slice(0, 12)} ` +
              `(${src.date}, API ${src.version})`);
});

test('the server exits cleanly (status 0: under ASan, no leak either)', async () => {
  eq((await srv.stop()).code, 0, 'exit status');
});

await run(async () => { await srv.stop(); });
