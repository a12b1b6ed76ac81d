// openai_schema.mjs: OpenAI's published response schemas (the subset vendored
// in openai_schemas.json, see make_openai_schemas.mjs) compiled with ajv, plus
// the few places where OpenAI's live API departs from its own document.
//
// The document is OpenAPI 3.1, whose schemas are JSON Schema 2020-12 (Ajv2020)
// with OpenAPI leftovers, handled here one by one so that the check keeps its
// teeth:
//   - `nullable: true` ("or null") becomes anyOf [the schema, {type: null}];
//     it is not merged into `type`, because next to an `enum` (chat chunks'
//     finish_reason) a type union alone would still reject null;
//   - `discriminator` is OpenAPI's hint for oneOf, and ajv's own `discriminator`
//     keyword (option discriminator: true) checks it;
//   - `x-*` and `example` are annotations: declared as such, nothing else.
// ajv runs strict: an unknown keyword or format in a regenerated file is a
// compile error, not silently ignored.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { here } from './lib.mjs';

const require = createRequire(import.meta.url);
export const vendored = JSON.parse(readFileSync(join(here, 'openai_schemas.json'), 'utf8'));
const ID = 'https://mfaserve.test/openai_schemas.json';
const REF = '#/components/schemas/';

// OpenAPI 3.1 schema -> plain JSON Schema 2020-12 (a new object)
function fromOpenAPI(node) {
  if (Array.isArray(node)) return node.map(fromOpenAPI);
  if (!node || typeof node !== 'object') return node;
  const out = {};
  for (const [k, v] of Object.entries(node)) {
    if (k === '$ref' && typeof v === 'string' && v.startsWith(REF)) out.$ref = ID + '#/$defs/' + v.slice(REF.length);
    else if (k === 'nullable') continue;
    else out[k] = fromOpenAPI(v);
  }
  if (node.nullable === true) {
    const { description, ...rest } = out;
    return { ...(description !== undefined ? { description } : {}), anyOf: [rest, { type: 'null' }] };
  }
  return out;
}

function at(schema, pointer) {
  let node = schema;
  for (const part of pointer.split('/').slice(1)) {
    node = node?.[part];
    if (node === undefined) throw new Error(`openai_schema: ${pointer} is not in the schema`);
  }
  return node;
}

function same(a, b) { return JSON.stringify(a) === JSON.stringify(b); }

// The completion stream form: the document says "both the streamed and
// non-streamed response objects share the same shape", so the stream form
// starts as a copy of CreateCompletionResponse and only the deviations below
// widen it; the non-streamed response is checked against the unpatched one.
const STREAM = 'CreateCompletionStreamResponse';
const COMPLETION_LOGPROBS = '/properties/choices/items/properties/logprobs/anyOf/0/properties';

// Where OpenAI's live API (and the document's own prose) departs from the
// document's schemas. Each entry names the schemas and the one spot it
// changes; `expect` is that spot as the document has it (descriptions left
// out), checked before patching, so a new upstream version that moves or
// fixes it makes this fail instead of patching something else.
export const DEVIATIONS = [
  {
    name: 'completion-stream-finish-reason-null',
    why: 'Streamed completion chunks carry "finish_reason": null until a choice ends (the live API, vLLM and the ' +
         'openai clients\' CompletionChoice all do), but the document reuses CreateCompletionResponse, whose ' +
         'finish_reason is a non-null enum, for the stream. Only the stream form is widened.',
    schemas: [STREAM],
    at: '/properties/choices/items/properties/finish_reason',
    expect: { type: 'string', enum: ['stop', 'length', 'content_filter'] },
    patch: (s) => ({ anyOf: [s, { type: 'null' }] }),
  },
  {
    name: 'completion-stream-usage-null',
    why: 'With stream_options.include_usage every chunk but the last carries "usage": null: the document\'s own ' +
         'ChatCompletionStreamOptions.include_usage says so ("All other chunks will also include a usage field, ' +
         'but with a null value"), and /completions takes the same stream_options, but CreateCompletionResponse\'s ' +
         'usage is not nullable. Only the stream form is widened.',
    schemas: [STREAM],
    at: '/properties/usage',
    expect: { $ref: `${ID}#/$defs/CompletionUsage` },
    patch: (s) => ({ anyOf: [s, { type: 'null' }] }),
  },
  {
    name: 'echo-first-token-logprob-null',
    why: 'With echo and logprobs the prompt\'s first token has no logprob (nothing precedes it): the live API ' +
         'answers token_logprobs[0] = null, as vLLM does, where the document says number. Only index 0 may be ' +
         'null; every later entry is still a number (a body does not say whether echo was asked for, so index 0 ' +
         'may be null without echo too).',
    schemas: ['CreateCompletionResponse', STREAM],
    at: COMPLETION_LOGPROBS + '/token_logprobs',
    expect: { type: 'array', items: { type: 'number' } },
    patch: (s) => ({ ...s, prefixItems: [{ anyOf: [s.items, { type: 'null' }] }] }),
  },
  {
    name: 'echo-first-token-top-logprobs-null',
    why: 'Likewise top_logprobs[0] is null for the echoed first prompt token (live API and vLLM), where the ' +
         'document says object. Only index 0 may be null.',
    schemas: ['CreateCompletionResponse', STREAM],
    at: COMPLETION_LOGPROBS + '/top_logprobs',
    expect: { type: 'array', items: { type: 'object', additionalProperties: { type: 'number' } } },
    patch: (s) => ({ ...s, prefixItems: [{ anyOf: [s.items, { type: 'null' }] }] }),
  },
];

function stripDescriptions(node) {
  return JSON.parse(JSON.stringify(node, (k, v) => (k === 'description' ? undefined : v)));
}

// The $defs the validator compiles: the vendored schemas converted, the
// stream form added, the deviations applied but those named in `skip` (the
// tests show each deviation is needed by leaving it out).
export function buildDefs({ skip = [] } = {}) {
  for (const n of skip) if (!DEVIATIONS.some((d) => d.name === n)) throw new Error(`no deviation ${n}`);
  const defs = fromOpenAPI(vendored.components.schemas);
  defs[STREAM] = structuredClone(defs.CreateCompletionResponse);
  defs[STREAM].description = 'mfaserve test: a streamed completion chunk (CreateCompletionResponse, see DEVIATIONS).';
  for (const d of DEVIATIONS) {
    if (skip.includes(d.name)) continue;
    for (const name of d.schemas) {
      const parts = d.at.split('/');
      const key = parts.pop();
      const parent = at(defs[name], parts.join('/'));
      const spot = parent[key];
      if (!same(stripDescriptions(spot), d.expect))
        throw new Error(`deviation ${d.name}: ${name}${d.at} is not what it was: ${JSON.stringify(spot)}`);
      parent[key] = d.patch(spot);
    }
  }
  return defs;
}

export function makeValidator({ skip = [] } = {}) {
  const Ajv2020 = require('ajv/dist/2020').default;
  const ajv = new Ajv2020({
    strict: true, strictTypes: false, strictTuples: false, // the document types by `type` where it matters
    allErrors: true, discriminator: true,
  });
  for (const k of ['x-stainless-const', 'x-oaiMeta', 'x-oaiTypeLabel', 'example']) ajv.addKeyword({ keyword: k });
  ajv.addFormat('unixtime', { type: 'number', validate: (x) => Number.isInteger(x) && x >= 0 });
  ajv.addFormat('date', /^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$/);
  ajv.addFormat('uri', (x) => { try { return !!new URL(x).protocol; } catch { return false; } });
  ajv.addSchema({ $id: ID, $defs: buildDefs({ skip }) });
  const cache = new Map();
  const get = (name) => {
    if (!cache.has(name)) {
      const v = ajv.getSchema(`${ID}#/$defs/${name}`);
      if (!v) throw new Error(`no schema ${name}`);
      cache.set(name, v);
    }
    return cache.get(name);
  };
  for (const name of [...vendored.roots, STREAM]) get(name); // compile everything up front
  return {
    // null when `body` is valid, else ajv's errors as text
    errors(name, body) {
      const v = get(name);
      return v(body) ? null : ajv.errorsText(v.errors, { separator: '; ', dataVar: name });
    },
    check(name, body, what = '') {
      const e = this.errors(name, body);
      if (e) throw new Error(`${what || name} does not match OpenAI's ${name}: ${e}\n${JSON.stringify(body)}`);
    },
  };
}
