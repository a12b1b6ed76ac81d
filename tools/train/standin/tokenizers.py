"""Stand-in for HF `tokenizers` (not packaged for Debian 12) for CPU smoke tests of
tools/train/train.py: loads a real tokenizer.json for its vocabulary size and special
ids, encodes bytes as ids 1..256. Not a tokenizer: only for exercising the pipeline."""
import json


class _Enc:
    def __init__(self, ids):
        self.ids = ids


class Tokenizer:
    @classmethod
    def from_file(cls, path):
        t = cls()
        t.j = json.load(open(path, encoding="utf-8"))
        t.vocab = dict(t.j["model"]["vocab"])
        for a in t.j.get("added_tokens", []):
            t.vocab[a["content"]] = a["id"]
        t.V = max(t.vocab.values()) + 1
        return t

    def token_to_id(self, s):
        return self.vocab.get(s)

    def get_vocab_size(self):
        return self.V

    def save(self, path):
        json.dump(self.j, open(path, "w", encoding="utf-8"))

    def encode(self, text):
        return _Enc([b + 1 for b in text.encode("utf-8")])

    def encode_batch(self, docs):
        return [self.encode(d) for d in docs]

    def decode(self, ids, skip_special_tokens=False):
        return bytes(i - 1 for i in ids if 1 <= i <= 256).decode("utf-8", "replace")
