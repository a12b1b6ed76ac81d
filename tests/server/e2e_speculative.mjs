// e2e_speculative.mjs: prompt-lookup (n-gram) speculative decoding through the
// real server and the official openai client, on the bundled model (a trained
// model: on a rewriting prompt it copies, so drafts are accepted; on free text
// they mostly are not). Two servers, one with --speculative-config and one
// without, must give the same text for greedy, seeded, n = 2, logprobs, stop
// strings, streaming and json_schema requests, run concurrently; vLLM's
// spec_decode counters must show drafts both accepted and rejected and add
// up; bad speculative flags exit 2 naming the problem.
// usage: node e2e_speculative.mjs MFASERVE_BINARY MODEL_DIR
import { spawnSync } from 'node:child_process';
import { args, assert, eq, metric, metricIn, needOpenAI, post, run, sleep, startServer, test } from './lib.mjs';

needOpenAI();
const { default: OpenAI } = await import('openai');
const { bin, model } = args();
const common = ['--kv-cache-memory', '64M', '--threads', '1', '--max-num-seqs', '16'];
const plain = await startServer(bin, model, common);
const spec = await startServer(bin, model, [...common, '--speculative-config',
  '{"method":"ngram","num_speculative_tokens":5,"prompt_lookup_max":4,"prompt_lookup_min":2}']);

const passages = [
  'The history of the free software movement begins in the early 1980s, when Richard Stallman announced the GNU ' +
    'project. He wanted a complete operating system that anyone could use, study, change and share.',
  'To open a file in Python, you call the built-in open function with the name of the file and a mode, and you ' +
    'close it when you are done, or better, use a with statement so that it is closed for you.',
  'And God said, Let there be light: and there was light. And God saw the light, that it was good: and God ' +
    'divided the light from the darkness.',
  'The server reads the request, checks the headers, parses the JSON body and answers with a status code and a ' +
    'body that says what went wrong when the request cannot be served.',
];
const rewrite = passages.map((p) => `Copy the passage below exactly.\n\nPassage: ${p}\n\nCopy: ${p.slice(0, 40)}`);
const free = ['In the beginning', 'SELECT name FROM users WHERE', 'The quick brown fox', 'Once upon a time there was'];

const bodies = [];
for (const prompt of [...rewrite, ...free]) {
  bodies.push({ prompt, max_tokens: 48, temperature: 0 });
  bodies.push({ prompt, max_tokens: 40, temperature: 0.8, top_p: 0.95, seed: 7, logprobs: 2 });
}
bodies.push({ prompt: rewrite[0], max_tokens: 40, temperature: 0.7, seed: 11, n: 2 });
bodies.push({ prompt: rewrite[1], max_tokens: 60, temperature: 0, stop: ['and then'] });
bodies.push({ prompt: rewrite[2], max_tokens: 40, temperature: 0, frequency_penalty: 0.5, presence_penalty: 0.3 });

const complete = (base, body) => post(base, '/v1/completions', { model: 'testmodel', ...body });

test('the same text with and without speculation, requests run concurrently', async () => {
  const [a, b] = await Promise.all([Promise.all(bodies.map((x) => complete(plain.base, x))),
                                    Promise.all(bodies.map((x) => complete(spec.base, x)))]);
  for (let i = 0; i < bodies.length; i++) {
    eq(a[i].status, 200, `plain ${i}: ${a[i].text}`);
    eq(b[i].status, 200, `spec ${i}: ${b[i].text}`);
    eq(b[i].json.choices.length, a[i].json.choices.length, `request ${i}: choices`);
    for (let c = 0; c < a[i].json.choices.length; c++) {
      const x = a[i].json.choices[c], y = b[i].json.choices[c];
      eq(y.text, x.text, `request ${i} choice ${c}: text`);
      eq(y.finish_reason, x.finish_reason, `request ${i} choice ${c}: finish_reason`);
      if (x.logprobs) {
        eq(JSON.stringify(y.logprobs.tokens), JSON.stringify(x.logprobs.tokens), `request ${i}: logprob tokens`);
        for (let k = 0; k < x.logprobs.token_logprobs.length; k++)
          assert(Math.abs(x.logprobs.token_logprobs[k] - y.logprobs.token_logprobs[k]) < 1e-3,
                 `request ${i} token ${k}: logprob ${y.logprobs.token_logprobs[k]} vs ${x.logprobs.token_logprobs[k]}`);
      }
    }
    eq(b[i].json.usage.completion_tokens, a[i].json.usage.completion_tokens, `request ${i}: usage`);
  }
  eq(a[bodies.length - 2].json.choices[0].finish_reason, 'stop', 'the stop string ended the copy');
});

test('streamed with the openai client: the same text', async () => {
  const texts = [];
  for (const base of [plain.base, spec.base]) {
    const client = new OpenAI({ baseURL: base + '/v1', apiKey: 'x' });
    const stream = await client.completions.create({ model: 'testmodel', prompt: rewrite[3], max_tokens: 50,
                                                     temperature: 0, stream: true });
    let t = '';
    for await (const ch of stream) t += ch.choices[0]?.text ?? '';
    texts.push(t);
  }
  eq(texts[1], texts[0], 'streamed text');
  assert(texts[0].length > 20, 'a real reply');
});

test('json_schema output with speculation equals the one without', async () => {
  const body = {
    messages: [{ role: 'user', content: 'Give a name and an age as JSON. name "Ada", age 36. name "Ada", age 36.' }],
    max_tokens: 60, temperature: 0,
    response_format: { type: 'json_schema', json_schema: { name: 'p', strict: true, schema: {
      type: 'object', properties: { name: { type: 'string', maxLength: 12 }, age: { type: 'integer' } },
      required: ['name', 'age'], additionalProperties: false } } },
  };
  const [a, b] = await Promise.all([post(plain.base, '/v1/chat/completions', body), post(spec.base, '/v1/chat/completions', body)]);
  eq(a.status, 200, a.text);
  eq(b.status, 200, b.text);
  eq(b.json.choices[0].message.content, a.json.choices[0].message.content, 'structured content');
});

test('vLLM spec_decode counters: drafts accepted and rejected, and they add up', async () => {
  const t = await (await fetch(spec.base + '/metrics')).text();
  const drafts = metricIn(t, 'vllm:spec_decode_num_drafts_total');
  const dt = metricIn(t, 'vllm:spec_decode_num_draft_tokens_total');
  const acc = metricIn(t, 'vllm:spec_decode_num_accepted_tokens_total');
  assert(drafts > 0 && dt >= drafts && dt <= 5 * drafts, `drafts ${drafts}, draft tokens ${dt}`);
  assert(acc > 0 && acc < dt, `accepted ${acc} of ${dt}: both outcomes must occur`);
  let sum = 0, prev = Infinity;
  for (let p = 0; p < 5; p++) {
    const v = metricIn(t, 'vllm:spec_decode_num_accepted_tokens_per_pos_total', `position="${p}"`);
    assert(v <= prev, `position ${p}: ${v} accepted, more than at position ${p - 1}`);
    sum += v;
    prev = v;
  }
  eq(sum, acc, 'accepted per position');
  eq(metricIn(t, 'mfaserve:spec_decode_num_accepted_tokens_total'), acc, 'mfaserve: name');
  const pt = await (await fetch(plain.base + '/metrics')).text();
  assert(!pt.includes('spec_decode'), 'no spec_decode series when speculation is off');
  // generation counts every emitted token once, drafts or not: the counter grows by the
  // requests' completion tokens (no stop strings here: tokens past a stop string that a step
  // made before the cancel arrived are counted but not returned). The counters are published
  // at the end of a step and may trail its last events, so read them until they settle.
  const settled = async (want) => {
    let v = NaN;
    for (let i = 0; i < 50 && v !== want; i++, await sleep(100)) v = await metric(spec.base, 'vllm:generation_tokens_total');
    return v;
  };
  const g0 = await settled(await metric(spec.base, 'vllm:generation_tokens_total'));
  let used = 0;
  for (const prompt of [rewrite[0], rewrite[2], free[0]]) {
    const r = await complete(spec.base, { prompt, max_tokens: 30, temperature: 0 });
    eq(r.status, 200, r.text);
    used += r.json.usage.completion_tokens;
  }
  eq(await settled(g0 + used), g0 + used, 'generation_tokens_total grew by the completion tokens');
});

test('bad speculative flags exit 2 and say why', async () => {
  const cases = [
    [['--speculative', 'eagle'], /--speculative 'eagle'/],
    [['--speculative', 'ngram', '--num-speculative-tokens', '0'], /num-speculative-tokens/],
    [['--speculative', 'ngram', '--ngram-prompt-lookup-min', '5', '--ngram-prompt-lookup-max', '3'], /lookup-min/],
    [['--speculative-config', '{"method":"draft_model","model":"x"}'], /"method" must be "ngram"/],
    [['--speculative-config', '{"method":"ngram","num_speculative_tokens":2.5}'], /num_speculative_tokens/],
    [['--speculative-config', '{"method":"ngram","prompt_lookup_maxx":3}'], /unknown key "prompt_lookup_maxx"/],
    [['--speculative-config', 'ngram'], /not a JSON object/],
  ];
  for (const [extra, re] of cases) {
    const r = spawnSync(bin, ['serve', '--model', model, '--port', '0', ...extra], { encoding: 'utf8', timeout: 20000 });
    eq(r.status, 2, `${extra.join(' ')}: exit status (stderr: ${r.stderr})`);
    assert(re.test(r.stderr), `${extra.join(' ')}: message ${JSON.stringify(r.stderr)} lacks ${re}`);
  }
});

await run(async () => {
  await plain.stop();
  await spec.stop();
});
