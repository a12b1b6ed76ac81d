// The grammar module on the official JSON-Schema-Test-Suite (npm
// json-schema-test-suite 0.0.10, which carries draft 3 and draft 4; we run
// draft 4's required tests), without a model: for every schema, either the
// compiler refuses it as unsupported (status "unsupported", naming the
// keyword), or the matcher accepts every valid instance and rejects every
// invalid one, byte by byte (gr_check).
//
// Serialisation: the grammar writes JSON compactly with object members in
// the schema's order, so an instance is offered in every member order
// (JSON.stringify, each object's keys permuted; capped): a valid instance
// must be accepted in at least one order, an invalid one in none.
//
// Usage: node suite.mjs <gr_check binary>
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const bin = process.argv[2];
if (!bin) {
  console.error('usage: node suite.mjs <gr_check>');
  process.exit(2);
}
let suiteDir;
try {
  suiteDir = path.join(path.dirname(require.resolve('json-schema-test-suite/package.json')), 'tests', 'draft4');
} catch {
  console.log('SKIP: npm ci --prefix tests/grammar has not been run (json-schema-test-suite missing)');
  process.exit(77);
}

// Groups whose expected results follow draft-4 rules that JSON Schema 2020-12
// (what the compiler implements) changed. Each is named with the reason.
const DRAFT4_ONLY = new Map([
  ['ref.json/ref overrides any sibling keywords',
   'draft 4 ignores keywords beside $ref; 2020-12 applies them (we do)'],
]);

// Keywords the issue lists as supported: a schema made only of these (and
// annotations) must compile. Others may be refused.
const SUPPORTED = new Set(['type', 'properties', 'required', 'additionalProperties', 'items', 'prefixItems',
  'additionalItems', 'minItems', 'maxItems', 'enum', 'const', 'anyOf', 'oneOf', 'allOf', '$ref', '$defs',
  'definitions', 'minLength', 'maxLength', 'pattern', 'format', 'minimum', 'maximum', 'exclusiveMinimum',
  'exclusiveMaximum', 'nullable', 'description', 'title', 'default', '$schema', 'id', '$id']);

function keywordsOf(s, out = new Set()) {
  if (Array.isArray(s)) { for (const x of s) keywordsOf(x, out); return out; }
  if (s && typeof s === 'object') {
    for (const [k, v] of Object.entries(s)) {
      out.add(k);
      if (k === 'properties' || k === 'definitions' || k === '$defs' || k === 'patternProperties') {
        for (const sub of Object.values(v)) keywordsOf(sub, out);
      } else if (k !== 'enum' && k !== 'const' && k !== 'default' && k !== 'required') keywordsOf(v, out);
    }
  }
  return out;
}

// Every member order of every object in v (as JSON texts), at most cap.
function orders(v, cap = 240) {
  if (Array.isArray(v)) {
    let acc = [[]];
    for (const x of v) {
      const alts = orders(x, cap);
      const next = [];
      for (const a of acc) for (const t of alts) { if (next.length < cap) next.push([...a, t]); }
      acc = next;
    }
    return acc.map((parts) => '[' + parts.join(',') + ']');
  }
  if (v && typeof v === 'object') {
    const keys = Object.keys(v);
    const perms = [];
    const permute = (rest, cur) => {
      if (perms.length >= cap) return;
      if (!rest.length) { perms.push(cur); return; }
      for (let i = 0; i < rest.length; i++) permute([...rest.slice(0, i), ...rest.slice(i + 1)], [...cur, rest[i]]);
    };
    permute(keys, []);
    const out = [];
    for (const p of perms) {
      let acc = [[]];
      for (const k of p) {
        const alts = orders(v[k], cap);
        const next = [];
        for (const a of acc) for (const t of alts) { if (next.length < cap) next.push([...a, JSON.stringify(k) + ':' + t]); }
        acc = next;
      }
      for (const parts of acc) if (out.length < cap) out.push('{' + parts.join(',') + '}');
    }
    return out;
  }
  return [JSON.stringify(v)];
}

const groups = [];
for (const file of fs.readdirSync(suiteDir).filter((f) => f.endsWith('.json')).sort()) {
  for (const g of JSON.parse(fs.readFileSync(path.join(suiteDir, file), 'utf8'))) {
    const texts = [];
    const spans = [];
    for (const t of g.tests) {
      const o = orders(t.data);
      spans.push([texts.length, o.length, t.valid, t.description]);
      texts.push(...o);
    }
    groups.push({ file, desc: g.description, schema: g.schema, spans, texts });
  }
}

// a cross-built gr_check runs through the emulator CTest names (tests/CMakeLists.txt)
const emu = (process.env.MFS_TEST_EMULATOR || '').split(' ').filter(Boolean);
const child = emu.length ? spawn(emu[0], [...emu.slice(1), bin], { stdio: ['pipe', 'pipe', 'inherit'] })
                         : spawn(bin, [], { stdio: ['pipe', 'pipe', 'inherit'] });
let buf = '';
const lines = [];
child.stdout.on('data', (d) => { buf += d; });
const done = new Promise((res) => child.on('close', res));
for (const g of groups) child.stdin.write(JSON.stringify({ kind: 'schema', source: g.schema, texts: g.texts }) + '\n');
child.stdin.end();
const rc = await done;
if (rc !== 0) { console.error(`gr_check exited ${rc}`); process.exit(1); }
lines.push(...buf.split('\n').filter((l) => l));
if (lines.length !== groups.length) { console.error(`gr_check answered ${lines.length} of ${groups.length}`); process.exit(1); }

let failures = 0, compiled = 0, refused = 0, checkedInstances = 0, skipped = 0;
const refusedBy = new Map();
const perFile = new Map();
for (let i = 0; i < groups.length; i++) {
  const g = groups[i];
  const r = JSON.parse(lines[i]);
  const key = `${g.file}/${g.desc}`;
  const pf = perFile.get(g.file) || { compiled: 0, refused: 0 };
  perFile.set(g.file, pf);
  if (DRAFT4_ONLY.has(key)) { skipped++; continue; }
  if (!r.compiled) {
    refused++;
    pf.refused++;
    refusedBy.set(r.what, (refusedBy.get(r.what) || 0) + 1);
    const kws = [...keywordsOf(g.schema)];
    const unsupportedKw = kws.filter((k) => !SUPPORTED.has(k));
    const refRemote = JSON.stringify(g.schema).includes('"$ref":"http') || JSON.stringify(g.schema).match(/"\$ref":"(?!#)/);
    if (r.code !== 'unsupported') {
      console.log(`FAIL ${key}: refused with ${r.code}, not "unsupported": ${r.msg}`);
      failures++;
    } else if (!r.what || !r.where) {
      console.log(`FAIL ${key}: refusal names no keyword/location: ${r.msg}`);
      failures++;
    } else if (!unsupportedKw.length && !refRemote && !/oneOf|allOf|pattern|format|\$ref|enum|const|minimum|maximum|items|depth/.test(r.what)) {
      console.log(`FAIL ${key}: uses only supported keywords but was refused: ${r.msg}`);
      failures++;
    }
    continue;
  }
  compiled++;
  pf.compiled++;
  for (const [start, n, valid, desc] of g.spans) {
    const acc = r.accepted.slice(start, start + n);
    const any = acc.some(Boolean);
    checkedInstances++;
    if (valid && !any) {
      console.log(`FAIL ${key} / ${desc}: valid instance rejected: ${g.texts[start]}`);
      failures++;
    }
    if (!valid && any) {
      console.log(`FAIL ${key} / ${desc}: invalid instance accepted: ${g.texts[start + acc.findIndex(Boolean)]}`);
      failures++;
    }
  }
}
console.log(`draft4: ${groups.length} schemas: ${compiled} compiled (${checkedInstances} instances checked), ` +
  `${refused} refused as unsupported, ${skipped} skipped (draft-4-only semantics)`);
console.log('refused by keyword: ' + [...refusedBy].map(([k, n]) => `${k} ${n}`).join(', '));
for (const [f, c] of perFile) console.log(`  ${f}: ${c.compiled} compiled, ${c.refused} refused`);
// The supported subset must actually be exercised: most schemas compile.
if (compiled < groups.length / 2) { console.log(`FAIL: only ${compiled} of ${groups.length} schemas compiled`); failures++; }
if (failures) { console.log(`${failures} failure(s)`); process.exit(1); }
console.log('ok');
