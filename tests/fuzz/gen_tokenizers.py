#!/usr/bin/env python3
"""gen_tokenizers.py OUTDIR: writes the small tokenizer.json files the
tokenizer fuzz targets load (checked in under tests/fuzz/data/tok_*).

A byte-level BPE is trained here on the Debian license texts (a few hundred
merges, so the files stay small and carry no third-party vocabulary), then
written in three styles the tokenizer supports:
  tok_bytelevel   GPT-2 style: ByteLevel pre-tokenizer with its regex, only
                  special added tokens (encode/decode round-trips exactly)
  tok_llama3      Llama-3 style: NFC, Split(regex) + ByteLevel(no regex),
                  ignore_merges, string merges, a non-special added token
  tok_spiece      sentencepiece style: Prepend/Replace normalizer, byte
                  fallback, <0xNN> tokens, Replace/ByteFallback/Fuse/Strip decoder
Deterministic: the same OUTDIR content every run."""
import collections
import glob
import json
import os
import re
import sys


def byte_chars():
    keep = [b for b in range(256) if 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF]
    cs, n = {}, 0
    for b in range(256):
        if b in keep:
            cs[b] = chr(b)
        else:
            cs[b] = chr(256 + n)
            n += 1
    return cs


def train(words, n_merges):
    """words: Counter of tuples of symbols. Returns the list of merges."""
    words = {tuple(w): c for w, c in words.items()}
    merges = []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        nw = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            nw[tuple(out)] = nw.get(tuple(out), 0) + c
        words = nw
    return merges


def main():
    out = sys.argv[1]
    text = ""
    for p in sorted(glob.glob("/usr/share/common-licenses/*"))[:6]:
        if os.path.isfile(p):
            text += open(p, encoding="utf-8", errors="replace").read()
    text += " naïve café 😀 ünïcödé 日本語 12345 \r\n\t "
    cs = byte_chars()
    pieces = re.findall(r"'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?[^\s\w]+|\s+(?!\S)|\s+", text)
    words = collections.Counter(tuple(cs[b] for b in p.encode()) for p in pieces)
    merges = train(words, 300)
    vocab = {cs[b]: b for b in range(256)}
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
    n = len(vocab)
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}

    def write(name, j, cfg):
        os.makedirs(os.path.join(out, name), exist_ok=True)
        with open(os.path.join(out, name, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(j, f, ensure_ascii=False, separators=(",", ":"))
        with open(os.path.join(out, name, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(cfg, f, ensure_ascii=False)

    write("tok_bytelevel", {
        "version": "1.0", "normalizer": None, "pre_tokenizer": bl, "post_processor": bl, "decoder": bl,
        "added_tokens": [{"id": n, "content": "<|endoftext|>", "special": True, "lstrip": False,
                          "rstrip": False, "normalized": False, "single_word": False}],
        "model": {"type": "BPE", "unk_token": None, "fuse_unk": False, "byte_fallback": False,
                  "vocab": vocab, "merges": [[a, b] for a, b in merges]}},
        {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "add_bos_token": False})

    llama_re = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
                "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
    added = [{"id": n + i, "content": c, "special": s, "lstrip": ls, "rstrip": rs, "normalized": False,
              "single_word": False}
             for i, (c, s, ls, rs) in enumerate([("<|begin_of_text|>", True, False, False),
                                                  ("<|end_of_text|>", True, False, False),
                                                  ("<|eot_id|>", True, False, False),
                                                  ("[tag]", False, True, True)])]
    write("tok_llama3", {
        "version": "1.0", "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": llama_re}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "added_tokens": added,
        "model": {"type": "BPE", "unk_token": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": True, "vocab": vocab, "merges": ["%s %s" % m for m in merges]}},
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "add_bos_token": True})

    # sentencepiece style: pieces over characters with U+2581 for spaces
    sp_pieces = re.findall(r" ?[^\s]+", text)
    sp_words = collections.Counter(tuple(p.replace(" ", "\u2581")) for p in sp_pieces)
    chars = sorted({c for w in sp_words for c in w})[:200]
    sp_merges = train(collections.Counter({w: c for w, c in sp_words.items() if all(ch in chars for ch in w)}),
                      150)
    sv = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        sv["<0x%02X>" % b] = len(sv)
    for c in chars:
        sv.setdefault(c, len(sv))
    for a, b in sp_merges:
        sv.setdefault(a + b, len(sv))
    write("tok_spiece", {
        "version": "1.0",
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "added_tokens": [{"id": i, "content": c, "special": True, "lstrip": False, "rstrip": False,
                          "normalized": False, "single_word": False}
                         for i, c in enumerate(["<unk>", "<s>", "</s>"])],
        "model": {"type": "BPE", "byte_fallback": True, "fuse_unk": True, "unk_token": "<unk>",
                  "vocab": sv, "merges": ["%s %s" % m for m in sp_merges]}},
        {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True})


if __name__ == "__main__":
    main()
