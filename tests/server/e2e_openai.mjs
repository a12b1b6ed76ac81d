// e2e_openai.mjs: the API as users drive it, through the official `openai`
// npm client: completions (every prompt shape, n, echo/logprobs scoring,
// stop strings, seeds), chat (template, streaming with usage, logprobs),
// models, and errors raised as the client's own exception types.
import { args, needOpenAI, startServer, test, run, post, assert, eq } from './lib.mjs';

needOpenAI();
const { default: OpenAI } = await import('openai');
const { bin, model } = args();
const srv = await startServer(bin, model, ['--max-model-len', '512']);
const client = new OpenAI({ baseURL: srv.base + '/v1', apiKey: 'unused', maxRetries: 0 });
const M = 'testmodel';

async function streamText(params) {
  const chunks = [];
  const s = await client.completions.create({ ...params, stream: true });
  for await (const c of s) chunks.push(c);
  return chunks;
}

test('models.list: served name and max_model_len', async () => {
  const list = await client.models.list();
  eq(list.data.map((m) => m.id), [M], 'model ids');
  eq(list.data[0].max_model_len, 512, 'max_model_len');
  eq(list.data[0].object, 'model', 'object');
});

test('completion: shape, finish_reason length, usage', async () => {
  const r = await client.completions.create({ model: M, prompt: 'hello world', max_tokens: 5, temperature: 0,
                                              ignore_eos: true });
  assert(r.id.startsWith('cmpl-'), 'id ' + r.id);
  eq(r.object, 'text_completion', 'object');
  eq(r.model, M, 'model');
  assert(Number.isInteger(r.created), 'created');
  eq(r.choices.length, 1, 'choices');
  eq(r.choices[0].finish_reason, 'length', 'finish_reason');
  eq(r.usage.completion_tokens, 5, 'completion_tokens');
  const tk = await post(srv.base, '/tokenize', { prompt: 'hello world' });
  eq(r.usage.prompt_tokens, tk.json.count, 'prompt_tokens');
  eq(r.usage.total_tokens, r.usage.prompt_tokens + 5, 'total');
});

test('completion: default max_tokens is 16', async () => {
  const r = await client.completions.create({ model: M, prompt: 'the', temperature: 0, ignore_eos: true });
  eq(r.usage.completion_tokens, 16, 'completion_tokens');
});

test('completion: greedy is deterministic and streaming matches', async () => {
  const p = { model: M, prompt: 'the world is', max_tokens: 24, temperature: 0, ignore_eos: true };
  const a = await client.completions.create(p);
  const b = await client.completions.create(p);
  eq(a.choices[0].text, b.choices[0].text, 'two greedy runs');
  const chunks = await streamText(p);
  eq(chunks.map((c) => c.choices.map((x) => x.text).join('')).join(''), a.choices[0].text, 'stream text');
  eq(chunks[chunks.length - 1].choices[0].finish_reason, 'length', 'last chunk finish_reason');
});

test('completion: prompt shapes (string list, ids, list of id lists) and n', async () => {
  const ids = (await post(srv.base, '/tokenize', { prompt: 'hello world' })).json.tokens;
  const single = await client.completions.create({ model: M, prompt: 'hello world', max_tokens: 6, temperature: 0,
                                                   ignore_eos: true });
  const byIds = await client.completions.create({ model: M, prompt: ids, max_tokens: 6, temperature: 0,
                                                  ignore_eos: true });
  eq(byIds.choices[0].text, single.choices[0].text, 'ids prompt = text prompt');
  const two = await client.completions.create({ model: M, prompt: ['hello world', 'the'], max_tokens: 6,
                                                temperature: 0, n: 2, ignore_eos: true });
  eq(two.choices.map((c) => c.index), [0, 1, 2, 3], 'indexes');
  eq(two.choices[0].text, single.choices[0].text, 'batch prompt 0');
  eq(two.choices[1].text, single.choices[0].text, 'n=2 greedy copies agree');
  eq(two.usage.completion_tokens, 24, 'usage over all choices');
  const lists = await client.completions.create({ model: M, prompt: [ids, ids], max_tokens: 6, temperature: 0,
                                                  ignore_eos: true });
  eq(lists.choices.map((c) => c.text), [single.choices[0].text, single.choices[0].text], 'list of lists');
});

test('completion: echo + logprobs + max_tokens 0 scores the prompt', async () => {
  const prompt = 'hello world the cat';
  const ids = (await post(srv.base, '/tokenize', { prompt })).json.tokens;
  const r = await client.completions.create({ model: M, prompt, max_tokens: 0, echo: true, logprobs: 1,
                                              temperature: 0 });
  const c = r.choices[0];
  eq(c.text, prompt, 'echoed text');
  eq(c.logprobs.tokens.length, ids.length, 'one entry per prompt token');
  eq(c.logprobs.token_logprobs[0], null, 'first token has no logprob');
  eq(c.logprobs.top_logprobs[0], null, 'first token has no top');
  for (let i = 1; i < ids.length; i++) {
    assert(typeof c.logprobs.token_logprobs[i] === 'number' && c.logprobs.token_logprobs[i] <= 0, 'logprob ' + i);
    assert(Object.keys(c.logprobs.top_logprobs[i]).length >= 1, 'top ' + i);
  }
  eq(c.logprobs.tokens.join(''), prompt, 'tokens spell the prompt');
  eq(r.usage.completion_tokens, 0, 'no completion tokens');
  eq(r.usage.prompt_tokens, ids.length, 'prompt tokens');
});

test('completion: logprobs 3 while generating', async () => {
  const r = await client.completions.create({ model: M, prompt: 'the', max_tokens: 4, logprobs: 3, temperature: 0,
                                              ignore_eos: true });
  const lp = r.choices[0].logprobs;
  eq(lp.tokens.length, 4, 'tokens');
  eq(lp.token_logprobs.length, 4, 'token_logprobs');
  for (const t of lp.top_logprobs) assert(Object.keys(t).length >= 1 && Object.keys(t).length <= 3, 'top size');
  eq(lp.text_offset.length, 4, 'text_offset');
  // special tokens (the EOS, generated here because of ignore_eos) are skipped in the text only
  eq(lp.tokens.join('').replace(/<\|[a-z_]+\|>/g, ''), r.choices[0].text, 'tokens spell the text');
});

test('completion: stop string is cut, finish_reason stop, stream agrees', async () => {
  const base = { model: M, prompt: 'hello', max_tokens: 40, temperature: 0, ignore_eos: true };
  const full = (await client.completions.create(base)).choices[0].text;
  const chars = Array.from(full);
  let stop = null;
  for (let i = 6; i + 2 <= chars.length && !stop; i++) {
    const cand = chars.slice(i, i + 2).join('');
    if (!cand.includes('\uFFFD')) stop = cand;
  }
  assert(stop, 'found a stop candidate in ' + JSON.stringify(full));
  const cut = full.slice(0, full.indexOf(stop));
  const r = await client.completions.create({ ...base, stop: [stop, 'zzzzzzzz'] });
  eq(r.choices[0].text, cut, 'text before the stop string');
  eq(r.choices[0].finish_reason, 'stop', 'finish_reason');
  assert(r.usage.completion_tokens < 40 && r.usage.completion_tokens >= 1, 'usage counts tokens up to the stop: ' +
         r.usage.completion_tokens);
  const chunks = await streamText({ ...base, stop });
  eq(chunks.map((c) => c.choices.map((x) => x.text).join('')).join(''), cut, 'stream text');
  eq(chunks[chunks.length - 1].choices[0].finish_reason, 'stop', 'stream finish_reason');
  const inc = await client.completions.create({ ...base, stop, include_stop_str_in_output: true });
  eq(inc.choices[0].text, cut + stop, 'include_stop_str_in_output');
});

test('completion: seed makes sampling reproducible', async () => {
  const p = { model: M, prompt: 'the', max_tokens: 12, temperature: 1.0, seed: 1234, ignore_eos: true };
  const a = await client.completions.create(p);
  const b = await client.completions.create(p);
  eq(a.choices[0].text, b.choices[0].text, 'same seed');
});

test('completion: vLLM extensions accepted (top_k, min_p, repetition_penalty, min_tokens, stop_token_ids, ...)', async () => {
  const r = await client.completions.create({ model: M, prompt: 'the', max_tokens: 5, temperature: 0.7, top_k: 5,
                                              min_p: 0.05, top_p: 0.9, repetition_penalty: 1.1, min_tokens: 2,
                                              stop_token_ids: [299], presence_penalty: 0.5, frequency_penalty: 0.5,
                                              logit_bias: { 100: 5 }, user: 'u', priority: 0,
                                              return_tokens_as_token_ids: true, logprobs: 0 });
  assert(r.usage.completion_tokens >= 2, 'min_tokens');
  for (const t of r.choices[0].logprobs.tokens) assert(/^token_id:\d+$/.test(t), 'token_id form ' + t);
});

test('chat: template, shape, usage, max_completion_tokens', async () => {
  const messages = [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hello world' }];
  const r = await client.chat.completions.create({ model: M, messages, max_completion_tokens: 7, temperature: 0,
                                                   ignore_eos: true });
  assert(r.id.startsWith('chatcmpl-'), 'id');
  eq(r.object, 'chat.completion', 'object');
  eq(r.choices[0].message.role, 'assistant', 'role');
  eq(typeof r.choices[0].message.content, 'string', 'content');
  eq(r.usage.completion_tokens, 7, 'completion tokens');
  const tk = await post(srv.base, '/tokenize', { messages });
  eq(r.usage.prompt_tokens, tk.json.count, 'prompt tokens = templated prompt');
  // the built-in ChatML: <|im_start|> is one special token (id 298)
  eq(tk.json.tokens[0], 298, 'ChatML start token');
  const parts = await client.chat.completions.create({
    model: M, max_tokens: 7, temperature: 0, ignore_eos: true,
    messages: [{ role: 'system', content: [{ type: 'text', text: 'be brief' }] },
               { role: 'user', content: [{ type: 'text', text: 'hello ' }, { type: 'text', text: 'world' }] }] });
  eq(parts.choices[0].message.content, r.choices[0].message.content, 'text parts = string content');
});

test('chat: stream with role/content deltas and include_usage', async () => {
  const p = { model: M, messages: [{ role: 'user', content: 'the world' }], max_tokens: 10, temperature: 0,
              ignore_eos: true };
  const full = await client.chat.completions.create(p);
  const s = await client.chat.completions.create({ ...p, stream: true, stream_options: { include_usage: true } });
  const chunks = [];
  for await (const c of s) chunks.push(c);
  eq(chunks[0].choices[0].delta.role, 'assistant', 'first delta has the role');
  eq(chunks[0].object, 'chat.completion.chunk', 'object');
  const text = chunks.filter((c) => c.choices.length).map((c) => c.choices[0].delta.content || '').join('');
  eq(text, full.choices[0].message.content, 'streamed content');
  const last = chunks[chunks.length - 1];
  eq(last.choices, [], 'usage chunk has no choices');
  eq(last.usage.completion_tokens, 10, 'usage chunk');
  eq(chunks[chunks.length - 2].choices[0].finish_reason, 'length', 'finish chunk');
});

test('chat: logprobs + top_logprobs', async () => {
  const r = await client.chat.completions.create({ model: M, messages: [{ role: 'user', content: 'hi' }],
                                                   max_tokens: 3, logprobs: true, top_logprobs: 2, temperature: 0,
                                                   ignore_eos: true });
  const c = r.choices[0].logprobs.content;
  eq(c.length, 3, 'one entry per token');
  for (const e of c) {
    assert(typeof e.token === 'string' && e.logprob <= 0 && Array.isArray(e.bytes), 'entry');
    eq(e.top_logprobs.length, 2, 'top_logprobs');
  }
});

test('errors: the client raises its own exception types', async () => {
  const expect = async (fn, Type, status, check) => {
    try {
      await fn();
    } catch (e) {
      assert(e instanceof Type, `expected ${Type.name}, got ${e && e.constructor && e.constructor.name}: ${e}`);
      eq(e.status, status, 'status');
      if (check) check(e);
      return;
    }
    throw new Error('no exception');
  };
  await expect(() => client.completions.create({ model: 'nope', prompt: 'x' }), OpenAI.NotFoundError, 404,
               (e) => eq(e.code, 'model_not_found', 'code'));
  await expect(() => client.completions.create({ model: M, prompt: 'x', temperature: 5 }), OpenAI.BadRequestError, 400,
               (e) => eq(e.param, 'temperature', 'param'));
  await expect(() => client.completions.create({ model: M, prompt: 'x', max_tokens: 100000 }), OpenAI.BadRequestError,
               400, (e) => eq(e.code, 'context_length_exceeded', 'code'));
  await expect(() => client.chat.completions.create({ model: M, messages: [] }), OpenAI.BadRequestError, 400);
  await expect(() => client.chat.completions.create({ model: M, messages: [{ role: 'user', content: 'x' }],
                                                      tools: [{ type: 'retrieval' }] }),
               OpenAI.BadRequestError, 400);
  await expect(() => client.completions.create({ model: M, prompt: 'x', logprobs: 21 }), OpenAI.BadRequestError, 400);
  await expect(() => client.completions.create({ model: M, prompt: 'x', stop: ['a', 'b', 'c', 'd', 'e'] }),
               OpenAI.BadRequestError, 400);
});

await run(async () => { await srv.stop(); });
