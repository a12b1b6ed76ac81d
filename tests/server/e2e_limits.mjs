// e2e_limits.mjs: load and lifecycle: 429 + Retry-After past
// --max-queued-requests, --api-key (401), a huge prompt not stalling other
// streams (it is tokenized on a worker), and SIGTERM: /health 503, new
// requests 503, running streams finish, or end with a clean error after
// --shutdown-timeout; exit status 0 either way.
import { spawnSync } from 'node:child_process';
import { args, startServer, test, run, post, sse, assert, eq, sleep } from './lib.mjs';

const { bin, model } = args();

function streamReq(base, body) {
  return fetch(base + '/v1/completions', { method: 'POST', headers: { 'content-type': 'application/json' },
                                           body: JSON.stringify({ ...body, stream: true }) });
}

test('429 with Retry-After past --max-queued-requests', async () => {
  const srv = await startServer(bin, model, ['--max-num-seqs', '1', '--max-queued-requests', '1']);
  try {
    const rs = await Promise.all(Array.from({ length: 6 }, () => post(srv.base, '/v1/completions', {
      prompt: 'the', max_tokens: 300, ignore_eos: true, temperature: 0 })));
    const codes = rs.map((r) => r.status).sort();
    const busy = rs.filter((r) => r.status === 429);
    assert(busy.length >= 1, 'some 429: ' + codes);
    // (how many get in depends on whether the scheduler admitted the first before the others arrived)
    assert(rs.filter((r) => r.status === 200).length >= 1, 'the running one served: ' + codes);
    assert(rs.every((r) => r.status === 200 || r.status === 429), 'only 200 and 429: ' + codes);
    for (const r of busy) {
      eq(r.headers.get('retry-after'), '1', 'Retry-After');
      eq(r.json.error.code, 'rate_limit_exceeded', 'code');
    }
    eq((await post(srv.base, '/v1/completions', { prompt: 'x', max_tokens: 2 })).status, 200, 'serves afterwards');
  } finally {
    await srv.stop();
  }
});

test('--api-key: /v1/ needs the bearer token (401 otherwise), /health does not', async () => {
  const srv = await startServer(bin, model, [], { env: { MFASERVE_API_KEY: 'sekret-key' } });
  try {
    const noKey = await fetch(srv.base + '/v1/models');
    eq(noKey.status, 401, 'no key');
    eq((await noKey.json()).error.code, 'invalid_api_key', 'code');
    eq((await fetch(srv.base + '/v1/models', { headers: { authorization: 'Bearer sekret-kez' } })).status, 401, 'wrong');
    eq((await fetch(srv.base + '/v1/models', { headers: { authorization: 'Bearer sekret' } })).status, 401, 'prefix');
    eq((await post(srv.base, '/v1/completions', { prompt: 'x' }, { authorization: 'Bearer nope' })).status, 401, 'POST');
    eq((await fetch(srv.base + '/v1/models', { headers: { authorization: 'Bearer sekret-key' } })).status, 200, 'right');
    eq((await fetch(srv.base + '/health')).status, 200, 'health is open');
  } finally {
    await srv.stop();
  }
});

test('a huge prompt is tokenized off the loop: /health and other streams keep answering', async () => {
  const srv = await startServer(bin, model, ['--max-body-bytes', '64M', '--max-model-len', '4096']);
  try {
    const gaps = [], probes = [];
    let last = 0, bigDone = false;
    const r = await streamReq(srv.base, { prompt: 'the', max_tokens: 4000, ignore_eos: true, temperature: 0 });
    const big = JSON.stringify({ prompt: 'hello world the cat sat on the mat. '.repeat(400000), max_tokens: 1 }); // 14 MB
    const streaming = sse(r, (ev) => {
      const now = performance.now();
      if (last && !bigDone) gaps.push(now - last);
      last = now;
      return !bigDone;
    });
    const probing = (async () => { // /health is answered on the loop thread itself
      while (!bigDone) {
        const t = performance.now();
        await fetch(srv.base + '/health');
        probes.push(performance.now() - t);
        await sleep(5);
      }
    })();
    await sleep(50);
    const t0 = performance.now();
    const b = await post(srv.base, '/v1/completions', big);
    const took = performance.now() - t0;
    bigDone = true;
    await streaming.catch(() => {});
    await probing;
    eq(b.status, 400, 'huge prompt rejected as too long for the context');
    eq(b.json.error.code, 'context_length_exceeded', 'code');
    const worst = Math.max(...gaps), worstProbe = Math.max(...probes);
    console.log(`     huge prompt (14 MB): ${took.toFixed(0)} ms end to end; meanwhile worst /health latency ` +
                `${worstProbe.toFixed(1)} ms over ${probes.length} probes, worst stream gap ${worst.toFixed(1)} ms`);
    assert(gaps.length > 3 && probes.length > 5, 'the stream and the probes kept going');
    // parsing + tokenizing 14 MB takes ~0.3 s on a worker; on the loop it would delay a probe that long
    assert(worstProbe < Math.max(150, took / 3), `loop stalled ${worstProbe.toFixed(0)} ms (request took ${took.toFixed(0)} ms)`);
  } finally {
    await srv.stop();
  }
});

test('--chat-template llama3 and a model that cannot load', async () => {
  const srv = await startServer(bin, model, ['--chat-template', 'llama3']);
  try {
    const t = await post(srv.base, '/tokenize', { messages: [{ role: 'user', content: ' hi ' }] });
    const d = await post(srv.base, '/detokenize', { tokens: t.json.tokens });
    eq(d.json.prompt, '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>' +
       '<|start_header_id|>assistant<|end_header_id|>\n\n', 'Llama 3 rendering');
  } finally {
    await srv.stop();
  }
  const plain = await startServer(bin, model, ['--chat-template', 'plain']);
  try {
    const t = await post(plain.base, '/tokenize', { messages: [{ role: 'system', content: 'S' }, { role: 'user', content: 'hi' }] });
    const d = await post(plain.base, '/detokenize', { tokens: t.json.tokens });
    eq(d.json.prompt, 'system: S\n\nuser: hi\n\nassistant: ', 'plain rendering (the bundled model\'s template)');
  } finally {
    await plain.stop();
  }
  const bad = await startServer(bin, '/nonexistent-model-dir', [], { ready: false });
  const ex = await bad.exit;
  eq(ex.code, 1, 'exit status when the model cannot load');
  assert(/cannot load model/.test(bad.log()), 'says why: ' + bad.log());
});

test('2000 clients that send half a request and leave: /health still answers (smoke; fuzz_http replays the lockout)', async () => {
  const srv = await startServer(bin, model, [], { nofile: 1024 });
  try {
    // (python: node's sockets do not reliably deliver the bytes before the close here)
    const py = spawnSync('python3', ['-c', `import socket
for k in range(2000):
    s = socket.socket(); s.connect(('127.0.0.1', ${srv.port})); s.send(b'GET /hea'); s.close()`]);
    eq(py.status, 0, 'flood script: ' + py.stderr);
    await sleep(200);
    const t0 = Date.now();
    const r = await fetch(srv.base + '/health', { signal: AbortSignal.timeout(20000) });
    eq(r.status, 200, '/health');
    console.log(`     /health answered ${Date.now() - t0} ms after the crowd left (idle timeout 5 s)`);
  } finally {
    await srv.stop();
  }
});

test('SIGTERM drains: health 503, new requests 503, the running stream finishes, exit 0', async () => {
  const srv = await startServer(bin, model, ['--shutdown-timeout', '20', '--max-model-len', '4096']);
  const r = await streamReq(srv.base, { prompt: 'the', max_tokens: 1500, ignore_eos: true, temperature: 0 });
  let signalled = false, health = 0, fresh = 0;
  const events = await sse(r, async (ev) => {
    if (!signalled) {
      signalled = true;
      srv.proc.kill('SIGTERM');
      await sleep(50);
      health = (await fetch(srv.base + '/health')).status;
      fresh = (await post(srv.base, '/v1/completions', { prompt: 'x', max_tokens: 2 })).status;
    }
  });
  eq(health, 503, '/health while draining');
  eq(fresh, 503, 'new request while draining');
  eq(events[events.length - 1], '[DONE]', 'stream ended normally');
  const fin = events.filter((e) => e !== '[DONE]' && e.choices && e.choices.length && e.choices[0].finish_reason);
  eq(fin.map((e) => e.choices[0].finish_reason), ['length'], 'finished by length');
  const ex = await srv.exit;
  eq(ex.code, 0, 'exit status');
});

test('SIGTERM past --shutdown-timeout: running stream ends with an error event, exit 0', async () => {
  const srv = await startServer(bin, model, ['--shutdown-timeout', '0.2', '--max-model-len', '4096']);
  const r = await streamReq(srv.base, { prompt: 'the', max_tokens: 4000, ignore_eos: true, temperature: 0 });
  let signalled = false;
  const t0 = performance.now();
  const events = await sse(r, (ev) => {
    if (!signalled) {
      signalled = true;
      srv.proc.kill('SIGTERM');
    }
  });
  const took = performance.now() - t0;
  eq(events[events.length - 1], '[DONE]', 'stream closed with [DONE]');
  const err = events.find((e) => e !== '[DONE]' && e.error);
  assert(err && err.error.code === 'service_unavailable', 'error event: ' + JSON.stringify(events.slice(-2)));
  assert(took < 3000, `ended soon after the timeout (${took.toFixed(0)} ms)`);
  eq((await srv.exit).code, 0, 'exit status');
});

await run();
