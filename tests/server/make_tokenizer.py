#!/usr/bin/env python3
"""make_tokenizer.py DIR: writes a tiny GPT-2-style byte-level BPE
tokenizer.json (256 byte tokens, a few dozen merges, 3 special tokens; 300
ids in all) and a tokenizer_config.json with a ChatML chat_template into DIR,
for the server tests' random model (vocab 300)."""
import json, os, sys


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    merges = []
    for a, b in [("Ġ", "t"), ("h", "e"), ("i", "n"), ("Ġt", "he"), ("e", "r"), ("o", "n"), ("a", "n"), ("r", "e"),
                 ("Ġ", "a"), ("o", "r"), ("e", "n"), ("Ġ", "s"), ("e", "s"), ("Ġ", "w"), ("l", "l"), ("o", "u"),
                 ("Ġ", "c"), ("i", "s"), ("Ġ", "h"), ("a", "t"), ("Ġ", "o"), ("e", "d"), ("i", "t"), ("Ġ", "b"),
                 ("in", "g"), ("Ġ", "f"), ("a", "r"), ("Ġ", "m"), ("Ġ", "p"), ("l", "e"), ("Ġ", "d"), ("h", "i"),
                 ("Ġ", "i"), ("a", "l"), ("s", "t"), ("Ġw", "or"), ("l", "d"), ("Ġwor", "ld"), ("he", "ll"),
                 ("hell", "o")]:
        merges.append(a + " " + b)
        vocab[a + b] = len(vocab)
    assert len(vocab) <= 297
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    added = []
    for i, s in enumerate(specials):
        added.append({"id": 297 + i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                      "normalized": False, "special": True})
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
           "pre_tokenizer": bl, "post_processor": bl, "decoder": bl,
           "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                     "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "vocab": vocab,
                     "merges": merges}}
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tok, f)
    cfg = {"bos_token": None, "eos_token": "<|im_end|>", "add_bos_token": False,
           "chat_template": "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
                            "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
                            "{{ '<|im_start|>assistant\\n' }}{% endif %}"}
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f)


if __name__ == "__main__":
    main()
