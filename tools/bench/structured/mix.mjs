// mix.mjs: aggregate decode rate of a batch of streamed completions, all
// free vs a share of them under a structured-output constraint (issue 14
// item 3: a mixed batch keeps its decode rate within 5%). Every request
// makes exactly --tokens tokens (free ones ignore EOS; constrained ones use
// a constraint that cannot end sooner), so the batches do the same work.
//
//   node tools/bench/structured/mix.mjs --base http://127.0.0.1:8000 [--n 16] [--tokens 96] [--runs 3]
//
// Prints, per run and mix, generated tokens / wall seconds, and the median
// ratio to the all-free batch measured in the same run.
const arg = (k, d) => { const i = process.argv.indexOf('--' + k); return i > 0 ? process.argv[i + 1] : d; };
const base = arg('base', 'http://127.0.0.1:8000');
const N = +arg('n', 16), T = +arg('tokens', 96), RUNS = +arg('runs', 3);

// constraints that take exactly T tokens or more: a long array of small
// objects (states repeat: masks come from the cache after the first items),
// and a string of exactly 2000 characters (every position a new state: the
// worst case for the mask cache)
const kinds = {
  json_records: { guided_json: { type: 'array', minItems: 200, maxItems: 200,
    items: { type: 'object', properties: { id: { type: 'integer', minimum: 0, maximum: 999 },
      ok: { type: 'boolean' }, tag: { enum: ['alpha', 'beta', 'gamma'] } }, required: ['id', 'ok', 'tag'],
      additionalProperties: false } } },
  bounded_string: { guided_json: { type: 'string', minLength: 2000, maxLength: 2000 } },
};

async function one(extra) {
  const r = await fetch(base + '/v1/completions', { method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'Records:', max_tokens: T, min_tokens: T, temperature: 1, seed: Math.floor(Math.random() * 1e9),
                           ignore_eos: true, stream: true, stream_options: { include_usage: true }, ...extra }) });
  const text = await r.text();
  const m = /"completion_tokens":(\d+)/.exec(text.slice(text.lastIndexOf('"usage"')));
  return m ? +m[1] : 0;
}

async function batch(nConstrained, extra) {
  const t0 = performance.now();
  const toks = await Promise.all(Array.from({ length: N }, (_, i) => one(i < nConstrained ? extra : {})));
  const s = (performance.now() - t0) / 1000;
  const total = toks.reduce((a, b) => a + b, 0);
  if (toks.some((t) => t !== T)) console.error(`  note: token counts ${JSON.stringify(toks)}`);
  return total / s;
}

await batch(N, kinds.json_records); // warm-up: compile and cache
await batch(N, kinds.bounded_string);
const ratios = {};
for (let r = 0; r < RUNS; r++) {
  const free = await batch(0, {});
  const line = [`run ${r + 1}: all free ${free.toFixed(0)} tok/s`];
  for (const [name, extra] of Object.entries(kinds))
    for (const share of [0.5, 1]) {
      const k = `${name} ${share * 100}%`;
      const v = await batch(Math.round(N * share), extra);
      (ratios[k] ??= []).push(v / free);
      line.push(`${k} ${v.toFixed(0)} (${(v / free).toFixed(3)})`);
    }
  console.log(line.join(', '));
}
const med = (a) => a.slice().sort((x, y) => x - y)[Math.floor(a.length / 2)];
for (const [k, v] of Object.entries(ratios)) console.log(`median ratio to all-free, ${k} constrained: ${med(v).toFixed(3)}`);
