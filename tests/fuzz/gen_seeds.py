#!/usr/bin/python3
"""gen_seeds.py: regenerates the seed corpora under tests/fuzz/corpus/ (the
seed-* files; regress-* files, inputs that once failed, are kept). Needs
/usr/bin/python3 with numpy (tools/make_model.py). Deterministic.
`gen_seeds.py grammar` writes only fuzz_grammar's seeds."""
import glob
import shutil
import json
import os
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def st(header, data=b""):
    h = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(h)) + h + data


def make_model(tmp, name, *args, dims=("8", "4", "8")):
    out = os.path.join(tmp, name)
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_model.py"), "--hidden-size", dims[0],
                    "--layers", "1", "--heads", "2", "--head-dim", dims[1], "--intermediate", dims[2], "--vocab", "16",
                    "--max-pos", "32", "--seed", "1", "--out", out] + list(args),
                   check=True, stdout=subprocess.DEVNULL)
    return out


def quantized(tmp, name, typ, *args):
    """A model whose rows are whole blocks of 32, written by `mfaserve quantize`
    (build/mfaserve must exist): the quantized-directory layout."""
    src = make_model(tmp, name + "-src", *args, dims=("32", "16", "32"))
    out = os.path.join(tmp, name)
    subprocess.run([os.path.join(ROOT, "build", "mfaserve"), "quantize", src, out, "--type", typ], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


def main():
    for f in glob.glob(os.path.join(CORPUS, "*", "seed-*")):
        os.unlink(f)
    tmp = tempfile.mkdtemp(prefix="mfs-seeds-")
    models = {
        "mfa-kr-f32": ["--attention", "mfa-kr", "--dtype", "f32"],
        "mfa-bf16": ["--attention", "mfa", "--dtype", "bf16", "--q-rank", "4"],
        "gqa-f16-tied": ["--attention", "gqa", "--dtype", "f16", "--tie", "--heads", "4", "--head-dim", "2"],
        "mha-f32-nohd": ["--attention", "mha", "--dtype", "f32", "--omit-head-dim"],
        "mqa-f16": ["--attention", "mqa", "--dtype", "f16"],
        "mla-f16": ["--attention", "mla", "--dtype", "f16", "--q-rank", "4", "--kv-rank", "4", "--nope-dim", "2",
                    "--rope-dim", "2", "--v-dim", "4"],
        "mla-qproj-bf16": ["--attention", "mla", "--dtype", "bf16", "--q-rank", "0", "--kv-rank", "6",
                           "--nope-dim", "4", "--rope-dim", "4", "--v-dim", "2"],
    }
    dirs = {name: make_model(tmp, name, *args) for name, args in models.items()}
    dirs["q8_0-mfa-kr"] = quantized(tmp, "q8_0-mfa-kr", "q8_0", "--attention", "mfa-kr", "--dtype", "f16")
    dirs["q4_0-gqa"] = quantized(tmp, "q4_0-gqa", "q4_0", "--attention", "gqa", "--dtype", "bf16", "--heads", "4",
                                 "--head-dim", "8")
    for name, d in dirs.items():
        cfg = open(os.path.join(d, "config.json"), "rb").read()
        w = open(os.path.join(d, "model.safetensors"), "rb").read()
        put("config", name + ".json", cfg)
        put("safetensors", name + ".safetensors", w)
        put("model_load", name, struct.pack("<H", len(cfg)) + cfg + w)

    # safetensors edge cases
    put("safetensors", "empty", b"")
    put("safetensors", "short", b"\x02\x00\x00")
    put("safetensors", "hlen-zero", struct.pack("<Q", 0))
    put("safetensors", "hlen-huge", struct.pack("<Q", 2**64 - 1) + b"{}")
    put("safetensors", "empty-object", st({}))
    put("safetensors", "metadata-only", st({"__metadata__": {"format": "pt"}}))
    put("safetensors", "scalar-and-empty",
        st({"s": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]},
            "z": {"dtype": "F16", "shape": [0, 3], "data_offsets": [4, 4]}}, b"\0" * 4))
    put("safetensors", "overlap",
        st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12))
    put("safetensors", "unaligned-f16",
        st({"a": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]},
            "b": {"dtype": "F32", "shape": [1, 1, 1, 1], "data_offsets": [2, 6]},
            "c": {"dtype": "F16", "shape": [3], "data_offsets": [6, 12]}}, b"\1" * 12))
    put("safetensors", "bad-dtype", st({"a": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8))
    h = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[1e30,1e30]}}'
    put("safetensors", "big-offsets", struct.pack("<Q", len(h)) + h + b"\0" * 4)
    h = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,1e30]}}'
    put("safetensors", "big-end-offset", struct.pack("<Q", len(h)) + h + b"\0" * 4)
    put("safetensors", "five-dims", st({"a": {"dtype": "F32", "shape": [1, 1, 1, 1, 1], "data_offsets": [0, 4]}},
                                       b"\0" * 4))

    # sharded index (fuzz_st_index has fixed shards: model-00001-of-00002
    # {a.weight, b.weight}, model-00002-of-00002 {c.weight, d}, bad.safetensors)
    s1, s2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    put("st_index", "valid", json.dumps({"metadata": {"total_size": 38},
                                         "weight_map": {"a.weight": s1, "b.weight": s1, "c.weight": s2, "d": s2}}))
    put("st_index", "one-shard", json.dumps({"weight_map": {"c.weight": s2}}))
    put("st_index", "wrong-shard", json.dumps({"weight_map": {"a.weight": s2}}))
    put("st_index", "bad-shard", json.dumps({"weight_map": {"x": "bad.safetensors"}}))
    put("st_index", "missing-file", json.dumps({"weight_map": {"a.weight": "nope.safetensors"}}))
    put("st_index", "path-escape", json.dumps({"weight_map": {"a.weight": "../" + s1, "b": "..", "c": "."}}))
    put("st_index", "self", json.dumps({"weight_map": {"a": "model.safetensors.index.json"}}))
    put("st_index", "dup-keys", '{"weight_map":{"a.weight":"%s","a.weight":"%s"}}' % (s1, s1))
    put("st_index", "not-object", '[1,2,3]')
    put("st_index", "empty-map", '{"weight_map":{}}')
    put("st_index", "non-string", '{"weight_map":{"a.weight":1}}')

    # config edge cases
    base = json.loads(open(os.path.join(CORPUS, "config", "seed-mfa-kr-f32.json")).read())
    def cfg(name, **kw):
        c = dict(base)
        for k, v in kw.items():
            if v is None:
                c.pop(k, None)
            else:
                c[k] = v
        put("config", name, json.dumps(c))
    cfg("odd-head-dim", head_dim=3)
    cfg("huge-dims", hidden_size=1000000000, num_attention_heads=1000000000, head_dim=1000000000)
    cfg("llama-kv-huge", architectures=["LlamaForCausalLM"], num_key_value_heads=1000000000,
        num_attention_heads=1000000000, head_dim=1000000000)
    cfg("rope-scaling", rope_scaling={"type": "linear", "factor": 2})
    cfg("eos-list", eos_token_id=[1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    cfg("eos-negative", eos_token_id=-5)
    cfg("eos-huge", eos_token_id=1e300)
    cfg("no-head-dim-indivisible", head_dim=None, hidden_size=10, num_attention_heads=4)
    cfg("groups-2", num_attention_groups=2)
    cfg("arch-unknown", architectures=["GPT2LMHeadModel"])
    cfg("arch-empty", architectures=[])
    cfg("float-int", hidden_size=8.5)
    cfg("negative-eps", rms_norm_eps=-1)
    mla = json.loads(open(os.path.join(CORPUS, "config", "seed-mla-f16.json")).read())
    put("config", "mla-moe", json.dumps(dict(mla, n_routed_experts=4, first_k_dense_replace=0)))
    put("config", "mla-moe-past-last-layer", json.dumps(dict(mla, n_routed_experts=4, first_k_dense_replace=1)))
    put("config", "mla-rope-odd", json.dumps(dict(mla, qk_rope_head_dim=3)))
    put("config", "mla-huge-rank", json.dumps(dict(mla, kv_lora_rank=16777216, num_attention_heads=1000)))
    put("config", "mla-q-lora-null", json.dumps(dict(mla, q_lora_rank=None)))
    put("config", "not-json", "{\"architectures\": [")
    put("config", "empty", "")

    # kvcache op sequences (see fuzz_kvcache.c for the encoding)
    put("kvcache", "basic", bytes([1, 6, 0, 6, 0, 3, 0, 6, 0, 3, 1, 2, 0, 0, 3, 1, 0, 8, 1, 5]))
    put("kvcache", "share", bytes([0, 10, 0, 6, 0, 4, 0, 1, 2, 0, 0, 0, 3, 1, 4, 1, 4, 0, 1, 0, 1, 0]))
    put("kvcache", "fork-cow", bytes([2, 4, 0, 4, 0, 5, 5, 0, 3, 0, 1, 2, 2, 0, 4, 1, 5, 5, 1, 2, 0, 2, 1, 6, 0, 3,
                                      0, 0, 0, 1, 0, 1, 1]))
    put("kvcache", "full", bytes([3, 0, 0, 0, 6, 0, 7, 0, 0, 0, 0, 0, 0, 0, 6, 1, 7, 0, 1, 2, 0, 0, 0, 0, 0, 0, 6,
                                  1, 7, 0, 1, 2, 0, 0]))
    put("kvcache", "weak-hash", bytes([9, 12, 0, 6, 0, 5, 0, 1, 0, 1, 0, 1, 0, 1, 0, 0, 3, 1, 10, 0, 1, 0, 1, 0, 1,
                                       0, 1, 0, 1, 0, 1, 0]))

    # tokenizer: byte 0 = tokenizer (bits 0-1) + flags (bits 2-4)
    texts = [b"Hello, world! The quick brown fox.", "naïve café 😀 日本語 12345".encode(),
             b"\xff\xfe\xc3\x28 invalid \xe2\x82", b"<|endoftext|><|begin_of_text|>[tag] <s></s> x",
             b"a\x00b\r\n\t  \n\n", b"",
             "GNU GENERAL PUBLIC LICENSE Version 3, 29 June 2007 ▁▁ ▁x".encode()]
    for i, t in enumerate(texts):
        for sel in (0, 1, 2):
            flags = [0, 4 | 8, 8 | 16][(i + sel) % 3]
            put("tokenizer", "t%d-%d" % (i, sel), bytes([sel | flags]) + t)
    put("tokenizer", "ids", bytes([16]) + struct.pack("<12H", 0, 1, 255, 256, 300, 301, 0xC3, 0x80, 65535, 20, 21, 22))


    # request bodies: byte 0 = route (0 completions, 1 chat, 2 tokenize,
    # 3 detokenize) | template << 2 (0 chatml, 1 llama3, 2 mistral)
    req = [
        (0, {"model": "test-model", "prompt": "Hello there", "max_tokens": 8, "temperature": 0.7, "top_p": 0.9,
             "top_k": 40, "min_p": 0.05, "seed": 42, "stop": ["\n", "end"], "n": 2, "logprobs": 3, "echo": True}),
        (0, {"prompt": [[1, 2, 3], [4, 5]], "max_tokens": 0, "logprobs": 0, "echo": True}),
        (0, {"prompt": ["a", "b", "c"], "stream": True, "stream_options": {"include_usage": True},
             "logit_bias": {"5": 10, "7": -100}, "stop_token_ids": [1, 2], "min_tokens": 2, "max_tokens": 4}),
        (0, {"prompt": "x" * 600}),
        (0, {"prompt": "hi", "max_tokens": 1000000000}),
        (0, {"prompt": "hi", "seed": 1e30}),
        (0, {"prompt": "hi", "n": 128, "best_of": 128, "ignore_eos": True, "priority": -5,
             "repetition_penalty": 1.1, "presence_penalty": -2, "frequency_penalty": 2}),
        (1, {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}],
             "max_completion_tokens": 5, "logprobs": True, "top_logprobs": 2}),
        (1 | 4, {"messages": [{"role": "developer", "content": [{"type": "text", "text": "  x  "}]},
                               {"role": "assistant", "content": None}, {"role": "user", "content": "q"}],
                 "add_generation_prompt": False, "tools": [], "tool_choice": "none",
                 "response_format": {"type": "text"}}),
        (1 | 8, {"messages": [{"role": "system", "content": "s1"}, {"role": "system", "content": "s2"},
                               {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}),
        (1, {"messages": []}),
        (2, {"prompt": "<|begin_of_text|>hello", "return_token_strs": True, "add_special_tokens": False}),
        (2 | 4, {"messages": [{"role": "user", "content": "hi"}], "add_generation_prompt": True}),
        (3, {"tokens": [0, 1, 2, 300, 555]}),
        (3, {"tokens": []}),
    ]
    for i, (sel, body) in enumerate(req):
        put("request", "r%02d" % i, bytes([sel]) + json.dumps(body, ensure_ascii=False).encode())
    put("request", "not-json", bytes([0]) + b'{"prompt": ')
    put("request", "empty", bytes([1]))
    put("request", "array", bytes([2]) + b'[1,2]')


    # the model fuzz_http serves: tiny MFA-KR over the tok_llama3 tokenizer
    hm = os.path.join(HERE, "data", "http_model")
    os.makedirs(hm, exist_ok=True)
    tokdir = os.path.join(HERE, "data", "tok_llama3")
    vocab = len(json.load(open(os.path.join(tokdir, "tokenizer.json")))["model"]["vocab"]) + 4
    d = make_model(tmp, "http", "--attention", "mfa-kr", "--dtype", "f32", "--tie", "--vocab", str(vocab),
                   "--max-pos", "256")
    for f in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(d, f), os.path.join(hm, f))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tokdir, f), os.path.join(hm, f))

    # raw HTTP for fuzz_http
    def http(method, path, body=None, headers=()):
        h = "%s %s HTTP/1.1\r\nHost: localhost\r\n" % (method, path)
        for k in headers:
            h += k + "\r\n"
        if body is not None:
            b = body if isinstance(body, bytes) else json.dumps(body).encode()
            h += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(b)
            return h.encode() + b"\r\n" + b
        return (h + "\r\n").encode()
    hs = {
        "health": http("GET", "/health"),
        "models": http("GET", "/v1/models"),
        "model-one": http("GET", "/v1/models/test-model"),
        "version": http("GET", "/version"),
        "metrics": http("GET", "/metrics"),
        "cache": http("GET", "/v1/cache/stats"),
        "ui": http("GET", "/"),
        "notfound": http("GET", "/nope"),
        "method": http("DELETE", "/v1/completions"),
        "completion": http("POST", "/v1/completions", {"model": "test-model", "prompt": "Hello", "max_tokens": 4,
                                                         "temperature": 0, "logprobs": 2, "echo": True}),
        "completion-stream": http("POST", "/v1/completions", {"prompt": ["a", "b"], "max_tokens": 3, "n": 2,
                                                                "stream": True,
                                                                "stream_options": {"include_usage": True}}),
        "chat": http("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}],
                                                       "max_tokens": 4, "logprobs": True, "top_logprobs": 1,
                                                       "stop": ["x"]}),
        "chat-stream": http("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}],
                                                              "max_tokens": 3, "stream": True}),
        "tokenize": http("POST", "/tokenize", {"prompt": "hello world", "return_token_strs": True}),
        "detokenize": http("POST", "/detokenize", {"tokens": [1, 2, 3]}),
        "bad-json": http("POST", "/v1/completions", b'{"prompt": [1, 2'),
        "too-long": http("POST", "/v1/completions", {"prompt": "word " * 300}),
        "chunked": (b"POST /tokenize HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                    b"Content-Type: application/json\r\n\r\n5\r\n{\"pro\r\n10\r\nmpt\": \"abc\"}   \r\n0\r\n\r\n"),
        "pipelined": http("GET", "/health") + http("POST", "/detokenize", {"tokens": [5]}) + http("GET", "/version"),
        "short-body": b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"prompt\"",
        "bad-length": b"POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n{}",
        "garbage": b"\x00\xff\r\n\r\nGET",
        "http10": b"GET /health HTTP/1.0\r\n\r\n",
        "auth": http("POST", "/v1/completions", {"prompt": "x", "max_tokens": 1},
                     ("Authorization: Bearer sekrit",)),
    }
    for k, v in hs.items():
        put("http", k, v)

    # tokenizer.json loading
    for name in ("tok_bytelevel", "tok_llama3", "tok_spiece"):
        d = os.path.join(HERE, "data", name)
        tj = open(os.path.join(d, "tokenizer.json"), "rb").read()
        cj = open(os.path.join(d, "tokenizer_config.json"), "rb").read()
        put("tokenizer_load", name, tj)
        put("tokenizer_load", name + "+config", tj + b"\n--config--\n" + cj)
    put("tokenizer_load", "empty-object", "{}")
    put("tokenizer_load", "unigram", '{"model":{"type":"Unigram","vocab":[["a",0.0]]}}')
    put("tokenizer_load", "tiny-bpe", '{"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":["a b"]},'
                                      '"added_tokens":[{"id":5,"content":"<x>","special":true}]}')
    put("tokenizer_load", "bad-merge", '{"model":{"type":"BPE","vocab":{"a":0},"merges":["a b", "a"]}}')
    put("tokenizer_load", "huge-id", '{"model":{"type":"BPE","vocab":{"a":2000000000},"merges":[]}}')
    put("tokenizer_load", "bad-config", '{"model":{"type":"BPE","vocab":{"a":0},"merges":[]}}\n--config--\n'
                                        '{"bos_token":{"content":7},"eos_token":"zz"}')
    put("tokenizer_load", "bad-regex", '{"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"pre_tokenizer":'
                                       '{"type":"Split","pattern":{"Regex":"(("},"behavior":"Isolated"}}')

    grammar_seeds()


def grammar_seeds():
    """fuzz_grammar: byte 0 = front end (0 schema, 1 regex, 2 GBNF, 3 choice;
    +4: strict objects), then source 0xFF text."""
    def g(name, sel, src, text=""):
        if not isinstance(src, str):
            src = json.dumps(src, separators=(",", ":"))
        put("grammar", name, bytes([sel]) + src.encode() + b"\xff" + text.encode())

    g("schema-object", 0, {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
                                                             "age": {"type": "integer", "minimum": 0, "maximum": 150},
                                                             "tags": {"type": "array", "items": {"enum": ["a", "b"]}}},
                           "required": ["name"]}, '{"name":"ab\\"c","age":42,"tags":["a"]}')
    g("schema-strict-nullable", 4, {"type": "object", "properties": {"x": {"type": ["number", "null"]},
                                                                      "d": {"type": "string", "format": "date"}}},
      '{"x":-1.5e3,"d":"2024-02-29"}')
    g("schema-ref-tree", 0, {"$defs": {"n": {"type": "object", "properties": {
        "v": {"type": "integer"}, "c": {"type": "array", "items": {"$ref": "#/$defs/n"}}},
        "required": ["v", "c"], "additionalProperties": False}}, "$ref": "#/$defs/n"},
      '{"v":1,"c":[{"v":2,"c":[]}]}')
    g("schema-anyof-const", 0, {"anyOf": [{"type": "object", "properties": {"k": {"const": "a"}, "r": {
        "type": "number", "exclusiveMinimum": 0}}, "required": ["k", "r"], "additionalProperties": False},
        {"type": "array", "prefixItems": [{"type": "boolean"}, {"type": "null"}], "items": False}]},
      '[true,null]')
    g("schema-pattern-format", 0, {"type": "object", "properties": {
        "id": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]+$"}, "u": {"type": "string", "format": "uuid"},
        "e": {"type": "string", "format": "email"}, "t": {"type": "string", "format": "date-time"}}},
      '{"id":"AB-12","u":"3f1c9a2e-8b7d-4c6a-9e5f-0a1b2c3d4e5f","e":"a@b.co","t":"2024-01-01T00:00:00Z"}')
    g("schema-any", 0, True, '{"a":[1,2.5,"x",null,true,{}]}')
    g("schema-bad-json", 0, '{"type":', "")
    g("schema-unsupported", 0, {"type": "string", "not": {"const": "x"}}, '"y"')
    g("regex-email", 1, "[a-z0-9._%+-]+@[a-z0-9.-]+\\.[a-z]{2,}", "ab.c@example.com")
    g("regex-alt-rep", 1, "^(foo|ba[rz]){1,3}(?:x*?y)?\\d{2}$", "foobarbazxy12")
    g("regex-unicode", 1, "[\u00e0-\u00ff]+ \\w+ [^a-z\\s]", "\u00e9\u00e8 abc X")
    g("regex-bad", 1, "(ab", "ab")
    g("regex-backref", 1, "(a)\\1", "aa")
    g("gbnf-json-ish", 2, 'root ::= "{" ws pair ("," ws pair)* "}"\npair ::= str ":" ws val\n'
                          'str ::= "\\"" [a-z]* "\\""\nval ::= str | [0-9]+ | "true" | "false"\nws ::= [ ]?\n',
      '{"a": 12, "bc":"x"}')
    g("gbnf-recursion", 2, 'root ::= expr\nexpr ::= term (("+" | "-") term)*\nterm ::= [0-9]+ | "(" expr ")"\n',
      "(1+2)-3")
    g("gbnf-repeat", 2, 'root ::= [a-c]{2,4} "x"? [^\\n]{0,3}\n', "abcx\u00e9!")
    g("gbnf-bad", 2, "root ::= (", "")
    g("choice", 3, "yes\nno\nmaybe\nyes please", "yes please")


if __name__ == "__main__":
    if sys.argv[1:] == ["grammar"]:  # only fuzz_grammar's seeds (no numpy needed)
        for f in glob.glob(os.path.join(CORPUS, "grammar", "seed-*")):
            os.unlink(f)
        grammar_seeds()
    else:
        main()
