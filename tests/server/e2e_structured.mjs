// e2e_structured.mjs: structured outputs and tool calls as users drive
// them, through the official `openai` npm client against the real server
// and the bundled model: chat.completions.parse with zod schemas
// (zodResponseFormat), zodFunction tools, json_object, vLLM's
// structured_outputs / guided_* (regex, choice, GBNF), streaming, and the
// 400s for constraints that cannot be honoured. Every constrained output is
// checked with an independent validator (ajv for JSON Schema, JavaScript's
// RegExp for regexes).
import { args, needOpenAI, startServer, test, run, post, assert, eq } from './lib.mjs';

needOpenAI();
const { default: OpenAI } = await import('openai');
const { zodResponseFormat, zodFunction } = await import('openai/helpers/zod');
const { z } = await import('zod');
const { default: Ajv } = await import('ajv/dist/2020.js');
const { makeValidator } = await import('./openai_schema.mjs');
const OAI = makeValidator(); // OpenAI's published response schemas (e2e_schema.mjs explains the copy)
const { bin, model } = args();
const srv = await startServer(bin, model, ['--max-model-len', '2048', '--kv-cache-memory', '64M']);
const client = new OpenAI({ baseURL: srv.base + '/v1', apiKey: 'unused', maxRetries: 0 });
const M = 'testmodel';
const ajv = new Ajv({ strict: false, allErrors: true });
// formats checked independently of the server's grammar (RFC 3339 full-date
// with the calendar, RFC 4122's textual form, a dot-atom address)
ajv.addFormat('uuid', /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i);
ajv.addFormat('date', (s) => {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(s);
  if (!m) return false;
  const d = new Date(Date.UTC(+m[1], +m[2] - 1, +m[3]));
  return d.getUTCFullYear() === +m[1] && d.getUTCMonth() === +m[2] - 1 && d.getUTCDate() === +m[3];
});
ajv.addFormat('email', /^[^@\s"(),:;<>[\\\]]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$/);

function validate(schema, value, what) {
  const { $schema, ...rest } = schema; // the client's draft-07 marker: ajv 2020 checks the keywords alike
  schema = rest;
  const v = ajv.compile(schema);
  assert(v(value), `${what}: ${JSON.stringify(value)} fails its schema: ${ajv.errorsText(v.errors)}`);
}

const Person = z.object({
  name: z.string().max(24),
  age: z.number().int().min(0).max(120),
  tags: z.array(z.enum(['admin', 'dev', 'ops'])).max(3),
  kind: z.union([z.literal('human'), z.literal('bot')]),
  nick: z.string().max(16).nullable(),
  score: z.number().min(-1).max(1),
});
const personFormat = zodResponseFormat(Person, 'person');
const personSchema = personFormat.json_schema.schema;

// every body and chunk also validates against OpenAI's own schema
async function chat(params) {
  const r = await client.chat.completions.create(params);
  if (params.stream) {
    const chunks = [];
    for await (const c of r) {
      OAI.check('CreateChatCompletionStreamResponse', c, 'chat chunk');
      chunks.push(c);
    }
    return chunks;
  }
  OAI.check('CreateChatCompletionResponse', r, 'chat');
  return r;
}

test('chat.completions.parse with a zod schema: parsed, and valid by ajv, across seeds', async () => {
  for (let seed = 1; seed <= 4; seed++) {
    const r = await client.chat.completions.parse({
      model: M, messages: [{ role: 'user', content: 'Describe a user of the system.' }],
      response_format: personFormat, max_tokens: 300, temperature: 1.0, seed,
    });
    const msg = r.choices[0].message;
    eq(r.choices[0].finish_reason, 'stop', 'finish_reason');
    assert(msg.parsed && typeof msg.parsed === 'object', 'parsed: ' + msg.content);
    validate(personSchema, JSON.parse(msg.content), `seed ${seed}`);
    eq(msg.refusal, null, 'refusal');
  }
});

test('json_schema streamed: the deltas join into a valid value', async () => {
  const s = await chat({
    model: M, messages: [{ role: 'user', content: 'A user:' }], response_format: personFormat,
    max_tokens: 300, temperature: 0.8, seed: 11, stream: true,
  });
  let text = '', fin = null;
  for await (const c of s) {
    text += c.choices[0]?.delta?.content ?? '';
    fin = c.choices[0]?.finish_reason ?? fin;
  }
  eq(fin, 'stop', 'finish_reason');
  validate(personSchema, JSON.parse(text), 'streamed');
});

test('max_tokens before the value is complete: finish_reason length', async () => {
  const r = await chat({
    model: M, messages: [{ role: 'user', content: 'A user:' }], response_format: personFormat, max_tokens: 4,
    temperature: 0,
  });
  eq(r.choices[0].finish_reason, 'length', 'finish_reason');
  const t = r.choices[0].message.content;
  assert('{"name":"'.startsWith(t) || t.startsWith('{"name":"'), 'a prefix of the value as the grammar writes it: ' + t);
  let parsed = true;
  try { JSON.parse(r.choices[0].message.content); } catch { parsed = false; }
  assert(!parsed, 'a 4-token prefix of the object should not be complete JSON: ' + r.choices[0].message.content);
});

test('response_format json_object: a JSON object, n=3', async () => {
  const r = await chat({
    model: M, messages: [{ role: 'user', content: 'Config:' }], response_format: { type: 'json_object' },
    max_tokens: 200, temperature: 1.0, seed: 5, n: 3,
  });
  let complete = 0;
  for (const c of r.choices) {
    assert(c.message.content.startsWith('{'), 'an object from its first byte: ' + c.message.content.slice(0, 40));
    if (c.finish_reason === 'length') continue; // json_object has no size bound; a cut value is allowed
    const v = JSON.parse(c.message.content);
    assert(v && typeof v === 'object' && !Array.isArray(v), 'object: ' + c.message.content);
    complete++;
  }
  assert(complete >= 1, 'no choice finished within max_tokens: the parse check never ran');
});

test('completions: structured_outputs.regex, guided_regex, choice, GBNF', async () => {
  const re = '[0-9]{3}-[a-z]{2,4}(\\.[A-Z])?';
  const full = new RegExp('^(?:' + re + ')$');
  for (const body of [{ structured_outputs: { regex: re } }, { guided_regex: re }]) {
    for (let seed = 1; seed <= 3; seed++) {
      const r = await client.completions.create({ model: M, prompt: 'Code:', max_tokens: 20, temperature: 1,
                                                  seed, ...body });
      const t = r.choices[0].text;
      assert(full.test(t), `regex output ${JSON.stringify(t)}`);
      eq(r.choices[0].finish_reason, 'stop', 'finish_reason');
    }
  }
  const choices = ['yes', 'no', 'not sure'];
  const c1 = await client.completions.create({ model: M, prompt: 'Is it?', max_tokens: 10, guided_choice: choices });
  assert(choices.includes(c1.choices[0].text), 'choice ' + c1.choices[0].text);
  const c2 = await chat({ model: M, messages: [{ role: 'user', content: 'Pick' }],
                                                    max_tokens: 10, structured_outputs: { choice: choices } });
  assert(choices.includes(c2.choices[0].message.content), 'chat choice ' + c2.choices[0].message.content);
  const gbnf = 'root ::= item ("," item){0,2}\nitem ::= [a-z]{1,5} "=" [0-9]{1,3}  # a list\n';
  const g = await client.completions.create({ model: M, prompt: 'Pairs:', max_tokens: 40, temperature: 1, seed: 3,
                                              structured_outputs: { grammar: gbnf } });
  assert(/^[a-z]{1,5}=[0-9]{1,3}(,[a-z]{1,5}=[0-9]{1,3}){0,2}$/.test(g.choices[0].text), 'gbnf ' + g.choices[0].text);
});

test('guided_json with $ref recursion, formats and bounds; streamed completions too', async () => {
  const schema = {
    $defs: { node: { type: 'object', properties: { id: { type: 'string', format: 'uuid' },
                                                   when: { type: 'string', format: 'date' },
                                                   size: { type: 'number', exclusiveMinimum: 0, maximum: 9.5 },
                                                   kids: { type: 'array', items: { $ref: '#/$defs/node' }, maxItems: 1 } },
                     required: ['id', 'when', 'size'], additionalProperties: false } },
    $ref: '#/$defs/node',
  };
  let complete = 0;
  for (let seed = 1; seed <= 3; seed++) {
    const r = await client.completions.create({ model: M, prompt: 'Tree:', max_tokens: 250, temperature: 1, seed,
                                                guided_json: schema });
    const t = r.choices[0].text;
    if (r.choices[0].finish_reason === 'length') { // recursion has no depth bound: a cut value, as written
      assert(t.startsWith('{"id":"'), 'a cut tree still starts as the grammar writes it: ' + t.slice(0, 40));
      continue;
    }
    validate(schema, JSON.parse(t), `tree seed ${seed}`);
    complete++;
  }
  assert(complete >= 1, 'no tree finished within max_tokens: the check above never ran');
});

test('a constraint that cannot be honoured is a 400 naming the keyword, never an unconstrained answer', async () => {
  const cases = [
    [{ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', patternProperties: { a: {} } } } } },
      'response_format', 'patternProperties'],
    [{ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'string', pattern: '(?=a)b' } } } },
      'response_format', 'pattern'],
    [{ structured_outputs: { regex: '(a' } }, 'structured_outputs', 'offset'],
    [{ structured_outputs: { grammar: 'root ::= foo' } }, 'structured_outputs', 'foo'],
    [{ guided_json: { oneOf: [{ type: 'object' }, { type: 'object' }] } }, 'guided_json', 'oneOf'],
    [{ guided_regex: 'a', guided_choice: ['b'] }, 'guided_choice', 'Only one'],
    [{ response_format: { type: 'yaml' } }, 'response_format', 'yaml'],
  ];
  for (const [extra, param, word] of cases) {
    const r = await post(srv.base, '/v1/chat/completions',
                         { model: M, messages: [{ role: 'user', content: 'x' }], max_tokens: 5, ...extra });
    eq(r.status, 400, 'status for ' + JSON.stringify(extra));
    eq(r.json.error.param, param, 'param for ' + JSON.stringify(extra));
    assert(r.json.error.message.includes(word), `message ${r.json.error.message} should name ${word}`);
  }
  const ok = await post(srv.base, '/health', undefined);
  assert(ok.status === 200 || ok.status === 405 || ok.status === 404, 'server still serving');
});

const weather = zodFunction({ name: 'get_weather', description: 'Weather for a city',
                              parameters: z.object({ city: z.string().max(20), unit: z.enum(['c', 'f']) }) });
const clock = zodFunction({ name: 'get_time', parameters: z.object({ zone: z.enum(['utc', 'local']) }) });

test('tools: tool_choice required with zodFunction: parsed arguments, valid by ajv, finish_reason tool_calls', async () => {
  for (let seed = 1; seed <= 3; seed++) {
    const r = await client.chat.completions.parse({
      model: M, messages: [{ role: 'user', content: 'What is the weather in Paris?' }], tools: [weather, clock],
      tool_choice: 'required', parallel_tool_calls: false, max_tokens: 200, temperature: 1, seed,
    });
    const raw = await chat({ model: M, messages: [{ role: 'user', content: 'Weather in Paris?' }], tools: [weather, clock],
                             tool_choice: 'required', parallel_tool_calls: false, max_tokens: 200, temperature: 1, seed });
    eq(raw.choices[0].message.content, null, 'content null beside the calls');
    const c = r.choices[0];
    eq(c.finish_reason, 'tool_calls', 'finish_reason');
    eq(c.message.tool_calls.length, 1, 'parallel_tool_calls false: one call');
    for (const tc of c.message.tool_calls) {
      eq(tc.type, 'function', 'type');
      assert(tc.id.startsWith('call_'), 'id');
      const fn = tc.function.name === 'get_weather' ? weather : clock;
      assert(['get_weather', 'get_time'].includes(tc.function.name), 'name ' + tc.function.name);
      validate(fn.function.parameters, JSON.parse(tc.function.arguments), 'arguments');
      assert(tc.function.parsed_arguments, 'parsed_arguments');
    }
  }
});

test('tools: a named function, streamed: delta.tool_calls carries the call', async () => {
  const s = await chat({
    model: M, messages: [{ role: 'user', content: 'Time?' }], tools: [weather, clock],
    tool_choice: { type: 'function', function: { name: 'get_time' } }, max_tokens: 100, stream: true,
  });
  const calls = [];
  let fin = null;
  for await (const c of s) {
    for (const tc of c.choices[0]?.delta?.tool_calls ?? []) {
      calls[tc.index] ??= { name: '', args: '' };
      if (tc.function?.name) calls[tc.index].name += tc.function.name;
      if (tc.function?.arguments) calls[tc.index].args += tc.function.arguments;
    }
    fin = c.choices[0]?.finish_reason ?? fin;
  }
  eq(fin, 'tool_calls', 'finish_reason');
  eq(calls.length, 1, 'one call');
  eq(calls[0].name, 'get_time', 'name');
  validate(clock.function.parameters, JSON.parse(calls[0].args), 'streamed arguments');
});

test('tools: the result goes back as a tool message; tool_choice errors are 400s', async () => {
  const r = await chat({
    model: M, tools: [weather], max_tokens: 8,
    messages: [{ role: 'user', content: 'Weather in Oslo?' },
               { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function',
                 function: { name: 'get_weather', arguments: '{"city":"Oslo","unit":"c"}' } }] },
               { role: 'tool', tool_call_id: 'call_1', content: '{"temp": 3}' }],
  });
  eq(r.choices.length, 1, 'answered');
  // the prompt the template made: the call as the model writes one, the result wrapped
  const tk = await post(srv.base, '/tokenize', { messages: [
    { role: 'assistant', content: null, tool_calls: [{ id: 'c', type: 'function',
      function: { name: 'get_weather', arguments: '{"city":"Oslo","unit":"c"}' } }] },
    { role: 'tool', tool_call_id: 'c', content: 'RESULT42' }] });
  eq(tk.status, 200, 'tokenize tool messages');
  const dt = await post(srv.base, '/detokenize', { tokens: tk.json.tokens });
  assert(dt.json.prompt.includes('<tool_call>\n{"name":"get_weather","arguments":{"city":"Oslo","unit":"c"}}\n</tool_call>'),
         'the past call in the prompt: ' + dt.json.prompt);
  assert(dt.json.prompt.includes('<tool_response>\nRESULT42\n</tool_response>'), 'the result in the prompt: ' + dt.json.prompt);
  for (const [extra, word] of [[{ tool_choice: { type: 'function', function: { name: 'nope' } } }, 'nope'],
                               [{ tool_choice: 'required', tools: undefined }, 'no \'tools\'']]) {
    const e = await post(srv.base, '/v1/chat/completions',
                         { model: M, messages: [{ role: 'user', content: 'x' }], tools: [weather], ...extra });
    eq(e.status, 400, 'status');
    assert(e.json.error.message.includes(word), e.json.error.message);
  }
});

test('a constrained request beside free ones leaves their greedy output unchanged', async () => {
  const free = { model: M, prompt: 'The manual says', max_tokens: 24, temperature: 0 };
  const solo = (await client.completions.create(free)).choices[0].text;
  const [a, b, c] = await Promise.all([
    client.completions.create(free),
    client.completions.create({ ...free, prompt: 'Record:', guided_json: personSchema, max_tokens: 200 }),
    client.completions.create(free),
  ]);
  eq(a.choices[0].text, solo, 'free request beside a constrained one');
  eq(c.choices[0].text, solo, 'second free request');
  if (b.choices[0].finish_reason === 'stop') validate(personSchema, JSON.parse(b.choices[0].text), 'beside free ones');
});

await run(() => srv.stop());
