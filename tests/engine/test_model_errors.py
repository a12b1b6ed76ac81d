#!/usr/bin/python3
"""test_model_errors.py: broken model directories must be load errors, not
crashes. For each case, `mfaserve logits` (which loads config and weights)
must exit with status exactly 2 (not 1, not a signal) within the timeout and
print a message on stderr naming the culprit (the file, config key or tensor,
as /work/shared/spec/model-format.md asks). Config-level cases also check
`mfaserve info --json`. The intact base models must load (rc 0), so a binary
that rejects everything fails this test too.

Each case starts from a fresh copy of a valid small model (MFA-KR single file,
Llama GQA single file, a 3-shard Llama, or MLA (DeepseekV2ForCausalLM) with
q_lora_rank or with a plain q_proj) and breaks one thing. Controls: the
intact bases load (read and --mmap alike), and so do an MLA config whose
routed experts start past the last layer and an MLA directory written by
`mfaserve quantize`.
"""
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import engine_util as U  # noqa: E402
from engine_util import MM  # noqa: E402

ST = "model.safetensors"
IDX = "model.safetensors.index.json"
SHARD2 = "model-00002-of-00003.safetensors"


# ---------------------------------------------------------------- file surgery

def st_read(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def st_write(path, hdr, data):
    js = json.dumps(hdr).encode()
    js += b" " * ((-len(js)) % 8)
    with open(path, "wb") as f:
        f.write(len(js).to_bytes(8, "little") + js + data)


def edit_header(fn):
    """Returns a mutator that applies fn(hdr) to model.safetensors' header."""
    def mut(d):
        p = os.path.join(d, ST)
        hdr, data = st_read(p)
        fn(hdr)
        st_write(p, hdr, data)
    return mut


def edit_json(name, fn):
    def mut(d):
        p = os.path.join(d, name)
        with open(p) as f:
            js = json.load(f)
        fn(js)
        with open(p, "w") as f:
            json.dump(js, f)
    return mut


def edit_config(fn):
    return edit_json("config.json", fn)


def write_bytes(name, b):
    def mut(d):
        with open(os.path.join(d, name), "wb") as f:
            f.write(b)
    return mut


def remove(name):
    def mut(d):
        os.unlink(os.path.join(d, name))
    return mut


def truncate(name, frac):
    def mut(d):
        p = os.path.join(d, name)
        os.truncate(p, int(os.path.getsize(p) * frac))
    return mut


def set_key(k, v):
    def f(c):
        c[k] = v
    return edit_config(f)


def del_key(k):
    def f(c):
        del c[k]
    return edit_config(f)


def set_header_len(n):
    def mut(d):
        p = os.path.join(d, ST)
        with open(p, "r+b") as f:
            f.write(int(n).to_bytes(8, "little"))
    return mut


def header_not_json(d):
    p = os.path.join(d, ST)
    with open(p, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        f.seek(8)
        f.write(b"{\"model.embed_tokens.weight\": {\"dtype\": [[[ not json" + b"!" * (n - 52))


def header_is_array(d):
    p = os.path.join(d, ST)
    _, data = st_read(p)
    js = b"[1, 2, 3]" + b" " * 7
    with open(p, "wb") as f:
        f.write(len(js).to_bytes(8, "little") + js + data)


def retype(name, st_dtype, esize):
    """Rebuild model.safetensors with tensor `name` stored as st_dtype
    (consistent offsets, so only the dtype is wrong)."""
    def mut(d):
        p = os.path.join(d, ST)
        hdr, data = st_read(p)
        items = sorted(((k, v) for k, v in hdr.items() if k != "__metadata__"),
                       key=lambda kv: kv[1]["data_offsets"][0])
        tensors = []
        for k, v in items:
            b, e = v["data_offsets"]
            dt, blob = v["dtype"], data[b:e]
            if k == name:
                n = 1
                for s in v["shape"]:
                    n *= s
                dt, blob = st_dtype, b"\x01" * (n * esize)
            tensors.append((k, dt, v["shape"], blob))
        MM.write_safetensors(p, tensors)
    return mut


def move_shard_entry(d):
    """weight_map says a tensor lives in shard 1, but it is in shard 2."""
    p = os.path.join(d, IDX)
    with open(p) as f:
        js = json.load(f)
    hdr, _ = st_read(os.path.join(d, SHARD2))
    name = sorted(k for k in hdr if k != "__metadata__")[0]
    js["weight_map"][name] = "model-00001-of-00003.safetensors"
    with open(p, "w") as f:
        json.dump(js, f)
    move_shard_entry.tensor = name


# ---------------------------------------------------------------- cases

L0 = "model.layers.0."
KPROJ = L0 + "self_attn.k_proj.weight"
UP1 = "model.layers.1.mlp.up_proj.weight"
GATE1 = "model.layers.1.self_attn.v_gate"
NORM_IN, NORM_POST = L0 + "input_layernorm.weight", L0 + "post_attention_layernorm.weight"


def h_set(name, key, fn):
    def f(h):
        h[name][key] = fn(h[name])
    return edit_header(f)


def h_overlap_partial(h):
    b, e = h[NORM_IN]["data_offsets"]
    n = e - b
    h[NORM_POST]["data_offsets"] = [b + n // 2, b + n // 2 + n]


def h_overlap_alias(h):
    h[NORM_POST]["data_offsets"] = list(h[NORM_IN]["data_offsets"])


def h_outside(h):
    end = max(v["data_offsets"][1] for k, v in h.items() if k != "__metadata__")
    b, e = h[UP1]["data_offsets"]
    h[UP1]["data_offsets"] = [end + 64, end + 64 + (e - b)]


UP1S = UP1 + "_scale"
MLA0 = L0 + "self_attn."
KVB, KVA = MLA0 + "kv_b_proj.weight", MLA0 + "kv_a_proj_with_mqa.weight"


def set_quant(key, v):
    def f(c):
        c["quantization_config"][key] = v
    return f


def h_scale_blocks(h):
    """UP1's scales claim half the blocks (offsets consistent, so the file is
    a valid safetensors and only the block count is wrong)."""
    e = h[UP1S]
    r, nb = e["shape"]
    e["shape"] = [r, nb // 2]
    b = e["data_offsets"][0]
    e["data_offsets"] = [b, b + r * (nb // 2) * 2]


def h_values_as_u8(h):
    """q8_0 values relabelled U8 (a q4_0 layout) with the same bytes: [r, c] U8"""
    h[UP1]["dtype"] = "U8"


# (name, base, level, mutate, culprits (any of them must appear in stderr))
CASES = [
    ("missing model directory", "kr", "config", None, ["no_such_model_dir"]),
    ("missing config.json", "kr", "config", remove("config.json"), ["config.json"]),
    ("config.json not JSON", "kr", "config", write_bytes("config.json", b'{"hidden_size": 12,'), ["config.json"]),
    ("config.json empty", "kr", "config", write_bytes("config.json", b""), ["config.json"]),
    ("config.json is an array", "kr", "config", write_bytes("config.json", b"[1, 2]"), ["config.json"]),
    ("architectures missing", "kr", "config", del_key("architectures"), ["architectures"]),
    ("architectures unknown", "kr", "config", set_key("architectures", ["GPT2LMHeadModel"]),
     ["architectures", "GPT2LMHeadModel"]),
    ("architectures empty list", "kr", "config", set_key("architectures", []), ["architectures"]),
    ("hidden_size missing", "kr", "config", del_key("hidden_size"), ["hidden_size"]),
    ("num_hidden_layers missing", "llama", "config", del_key("num_hidden_layers"), ["num_hidden_layers"]),
    ("vocab_size missing", "llama", "config", del_key("vocab_size"), ["vocab_size"]),
    ("intermediate_size missing", "kr", "config", del_key("intermediate_size"), ["intermediate_size"]),
    ("share_q_dim missing (MFA)", "kr", "config", del_key("share_q_dim"), ["share_q_dim"]),
    ("hidden_size is a string", "kr", "config", set_key("hidden_size", "128"), ["hidden_size"]),
    ("num_attention_heads is 4.5", "llama", "config", set_key("num_attention_heads", 4.5), ["num_attention_heads"]),
    ("hidden_size is 0", "llama", "config", set_key("hidden_size", 0), ["hidden_size"]),
    ("key_reuse is a string", "kr", "config", set_key("key_reuse", "yes"), ["key_reuse"]),
    ("num_attention_groups 2", "kr", "config", set_key("num_attention_groups", 2), ["num_attention_groups"]),
    ("no head_dim and hidden_size % heads != 0", "llama_nohd", "config", set_key("num_attention_heads", 5),
     ["num_attention_heads", "head_dim", "hidden_size"]),
    ("heads % num_key_value_heads != 0", "llama", "config", set_key("num_key_value_heads", 3),
     ["num_key_value_heads", "num_attention_heads"]),
    ("odd head_dim (RoPE needs pairs)", "odd_hd", "config", None, ["head_dim"]),
    ("missing model.safetensors", "kr", "weights", remove(ST), [ST]),
    ("empty model.safetensors", "kr", "weights", write_bytes(ST, b""), [ST]),
    ("model.safetensors of 3 bytes", "kr", "weights", write_bytes(ST, b"\x10\x00\x00"), [ST]),
    ("truncated model.safetensors (60%)", "kr", "weights", truncate(ST, 0.6), [ST]),
    ("header length larger than file", "kr", "weights", set_header_len(10 ** 7), [ST]),
    ("header length 2^64-1", "kr", "weights", set_header_len(2 ** 64 - 1), [ST]),
    ("header not JSON", "kr", "weights", header_not_json, [ST]),
    ("header JSON is an array", "kr", "weights", header_is_array, [ST]),
    ("missing tensor v_gate", "kr", "weights", edit_header(lambda h: h.pop(GATE1)), [GATE1]),
    ("missing lm_head.weight (untied)", "llama", "weights", edit_header(lambda h: h.pop("lm_head.weight")),
     ["lm_head.weight"]),
    ("misshaped tensor (transposed k_proj)", "kr", "weights",
     h_set(KPROJ, "shape", lambda e: e["shape"][::-1]), [KPROJ]),
    ("misshaped tensor (rank 2 norm)", "kr", "weights",
     h_set(NORM_IN, "shape", lambda e: [1] + e["shape"]), [NORM_IN]),
    ("unsupported dtype I8", "kr", "weights", retype(UP1, "I8", 1), [UP1]),
    ("unsupported dtype F64", "kr", "weights", retype(UP1, "F64", 8), [UP1]),
    ("data_offsets outside the file", "kr", "weights", edit_header(h_outside), [UP1]),
    ("data_offsets overlap (partial)", "kr", "weights", edit_header(h_overlap_partial), [NORM_IN, NORM_POST]),
    ("data_offsets overlap (aliased)", "kr", "weights", edit_header(h_overlap_alias), [NORM_IN, NORM_POST]),
    ("data_offsets length != shape * dtype size", "kr", "weights",
     h_set(UP1, "data_offsets", lambda e: [e["data_offsets"][0], e["data_offsets"][1] - 4]), [UP1]),
    ("data_offsets begin > end", "kr", "weights",
     h_set(UP1, "data_offsets", lambda e: e["data_offsets"][::-1]), [UP1]),
    ("data_offsets not two integers", "kr", "weights",
     h_set(UP1, "data_offsets", lambda e: [e["data_offsets"][0]]), [UP1]),
    ("sharded: missing shard file", "sharded", "weights", remove(SHARD2), [SHARD2]),
    ("sharded: truncated shard", "sharded", "weights", truncate(SHARD2, 0.5), [SHARD2]),
    ("sharded: index not JSON", "sharded", "weights", write_bytes(IDX, b'{"weight_map": '), [IDX]),
    ("sharded: weight_map not an object", "sharded", "weights",
     edit_json(IDX, lambda j: j.__setitem__("weight_map", ["a", "b"])), ["weight_map", IDX]),
    ("sharded: weight_map missing", "sharded", "weights",
     edit_json(IDX, lambda j: j.pop("weight_map")), ["weight_map", IDX]),
    ("sharded: weight_map points to the wrong shard", "sharded", "weights", move_shard_entry, None),
    # quantized directories (written by `mfaserve quantize`, docs/quantized-weights.md)
    ("quantized: missing scale tensor", "q8", "weights", edit_header(lambda h: h.pop(UP1S)), [UP1S]),
    ("quantized: scales for half the blocks", "q8", "weights", edit_header(h_scale_blocks), [UP1S]),
    ("quantized: scales not F16", "q4", "weights",
     h_set(UP1S, "dtype", lambda e: "BF16"), [UP1S]),
    ("quantized: values with the other format's dtype", "q8", "weights", edit_header(h_values_as_u8), [UP1]),
    ("quantized: truncated file (70%)", "q4", "weights", truncate(ST, 0.7), [ST]),
    ("quantized: unknown format_version", "q8", "config", edit_config(set_quant("format_version", 2)),
     ["format_version"]),
    ("quantized: unknown weight_type", "q8", "config", edit_config(set_quant("weight_type", "q3_k")),
     ["weight_type"]),
    ("quantized: other quant_method", "q4", "config", edit_config(set_quant("quant_method", "gptq")),
     ["quant_method"]),
    ("quantized: group_size 64", "q4", "config", edit_config(set_quant("group_size", 64)), ["group_size"]),
    ("quantized: quantization_config removed", "q8", "weights", edit_config(lambda c: c.pop("quantization_config")),
     ["quantization_config"]),
    # MLA (DeepseekV2ForCausalLM, docs/mla-format.md)
    ("mla: kv_lora_rank missing", "mla", "config", del_key("kv_lora_rank"), ["kv_lora_rank"]),
    ("mla: kv_lora_rank 0", "mla", "config", set_key("kv_lora_rank", 0), ["kv_lora_rank"]),
    ("mla: qk_nope_head_dim missing", "mla", "config", del_key("qk_nope_head_dim"), ["qk_nope_head_dim"]),
    ("mla: qk_rope_head_dim odd", "mla", "config", set_key("qk_rope_head_dim", 7), ["qk_rope_head_dim"]),
    ("mla: v_head_dim a string", "mla", "config", set_key("v_head_dim", "16"), ["v_head_dim"]),
    ("mla: q_lora_rank negative", "mla", "config", set_key("q_lora_rank", -1), ["q_lora_rank"]),
    ("mla: routed experts (MoE)", "mla", "config", set_key("n_routed_experts", 8), ["n_routed_experts"]),
    ("mla: MoE from layer 1", "mla", "config",
     edit_config(lambda c: c.update(n_routed_experts=4, first_k_dense_replace=1)), ["n_routed_experts"]),
    ("mla: rope_scaling yarn", "mla", "config",
     set_key("rope_scaling", {"type": "yarn", "factor": 40, "mscale": 0.707}), ["rope_scaling"]),
    ("mla: attention_bias true", "mla", "config", set_key("attention_bias", True), ["attention_bias"]),
    ("mla: missing kv_b_proj", "mla", "weights", edit_header(lambda h: h.pop(KVB)), [KVB]),
    ("mla: missing kv_a_layernorm", "mla", "weights",
     edit_header(lambda h: h.pop(MLA0 + "kv_a_layernorm.weight")), [MLA0 + "kv_a_layernorm.weight"]),
    ("mla: missing q_a_layernorm", "mla", "weights",
     edit_header(lambda h: h.pop(MLA0 + "q_a_layernorm.weight")), [MLA0 + "q_a_layernorm.weight"]),
    ("mla: misshaped kv_a_proj_with_mqa (transposed)", "mla", "weights",
     h_set(KVA, "shape", lambda e: e["shape"][::-1]), [KVA]),
    ("mla: v_head_dim disagrees with kv_b_proj", "mla", "weights", set_key("v_head_dim", 20), [KVB]),
    ("mla: q_lora_rank set, but the model has a plain q_proj", "mla_qproj", "weights", set_key("q_lora_rank", 32),
     [MLA0 + "q_a_proj.weight"]),
    ("mla: q_lora_rank null, but the model has q_a_proj/q_b_proj", "mla", "weights", set_key("q_lora_rank", None),
     [MLA0 + "q_proj.weight"]),
]


def make_bases(tmp, binary):
    small = dict(layers=2, vocab=64, seed=1)
    b = {}
    b["kr"] = os.path.join(tmp, "base_kr")
    MM.make_model(b["kr"], attention="mfa-kr", hidden_size=64, heads=2, head_dim=32, q_rank=32, **small)
    b["llama"] = os.path.join(tmp, "base_llama")
    MM.make_model(b["llama"], attention="gqa", hidden_size=64, heads=4, kv_heads=2, **small)
    b["llama_nohd"] = os.path.join(tmp, "base_llama_nohd")
    MM.make_model(b["llama_nohd"], attention="mha", hidden_size=64, heads=4, omit_head_dim=True, **small)
    b["sharded"] = os.path.join(tmp, "base_sharded")
    MM.make_model(b["sharded"], attention="gqa", hidden_size=64, heads=4, kv_heads=2, shards=3, **small)
    b["mla"] = os.path.join(tmp, "base_mla")
    MM.make_model(b["mla"], attention="mla", hidden_size=64, heads=4, q_rank=32, kv_rank=32, nope_dim=16,
                  rope_dim=8, v_dim=16, **small)
    b["mla_qproj"] = os.path.join(tmp, "base_mla_qproj")
    MM.make_model(b["mla_qproj"], attention="mla", hidden_size=64, heads=4, q_rank=0, kv_rank=32, nope_dim=16,
                  rope_dim=8, v_dim=16, **small)
    b["mla_dense_moe_cfg"] = os.path.join(tmp, "base_mla_dense_moe_cfg")  # experts past the last layer: dense
    shutil.copytree(b["mla"], b["mla_dense_moe_cfg"])
    edit_config(lambda c: c.update(n_routed_experts=64, first_k_dense_replace=2, moe_layer_freq=1))(
        b["mla_dense_moe_cfg"])
    b["odd_hd"] = os.path.join(tmp, "base_odd_hd")
    MM.make_model(b["odd_hd"], attention="mfa", hidden_size=64, heads=2, head_dim=15, q_rank=32, **small)
    for q, src, t in (("q8", "kr", "q8_0"), ("q4", "llama", "q4_0"), ("mla_q8", "mla", "q8_0")):
        b[q] = os.path.join(tmp, "base_" + q)
        p = U.run(binary, ["quantize", b[src], b[q], "--type", t], timeout=60)
        if p.returncode != 0:
            raise RuntimeError("mfaserve quantize failed: " + p.stderr[-300:])
    return b


def main():
    args = U.parse_args(lambda ap: ap.add_argument("--only", default=None))
    rec = U.Recorder()
    tmp = U.tmpdir("mfs_errors_")
    out = os.path.join(tmp, "logits.bin")
    try:
        bases = make_bases(tmp, args.bin)
        for k in ("kr", "llama", "llama_nohd", "sharded", "q8", "q4", "mla", "mla_qproj", "mla_dense_moe_cfg",
                  "mla_q8"):
            p = U.run(args.bin, ["logits", "--model", bases[k], "--prompt-ids", "1,2,3", "--out", out], timeout=60)
            rec.check("control: intact base model '%s' loads" % k, p.returncode == 0,
                      "rc=%d %s" % (p.returncode, p.stderr.strip()[-200:]))
            # the weights read into memory (default) and mapped (--mmap) give the same bits
            read, e1 = U.engine_logits(args.bin, bases[k], [1, 2, 3], out)
            mapped, e2 = U.engine_logits(args.bin, bases[k], [1, 2, 3], out, ["--mmap"])
            rec.check("control: '%s' read and --mmap logits identical" % k,
                      read is not None and mapped is not None and (read == mapped).all(), e1 + e2)
        # `mfaserve quantize` usage errors: status 2 and a message saying what is wrong
        for what, argv, want in [
                ("no --type", ["quantize", bases["kr"], os.path.join(tmp, "qx")], "--type"),
                ("unknown --type", ["quantize", bases["kr"], os.path.join(tmp, "qx"), "--type", "q3_k"], "q3_k"),
                ("output == input", ["quantize", bases["kr"], bases["kr"], "--type", "q8_0"], "differ"),
                ("input already quantized", ["quantize", bases["q8"], os.path.join(tmp, "qy"), "--type", "q4_0"],
                 "already quantized"),
                ("input not a model", ["quantize", os.path.join(tmp, "nothing"), os.path.join(tmp, "qz"),
                                       "--type", "q8_0"], "config.json")]:
            p = U.run(args.bin, argv, timeout=60)
            rec.check("quantize, %s: exit 2 saying '%s'" % (what, want), p.returncode == 2 and want in p.stderr,
                      "rc=%d %s" % (p.returncode, p.stderr.strip()[-200:]))
        p = U.run(args.bin, ["generate", "--model", bases["q8"], "--quantize", "q4_0", "--prompt-ids", "1",
                             "--max-tokens", "1"], timeout=60)
        rec.check("a q8_0 directory with --quantize q4_0: exit 2 naming both", p.returncode == 2 and
                  "already quantized" in p.stderr, "rc=%d %s" % (p.returncode, p.stderr.strip()[-200:]))
        for i, (name, base, level, mut, culprits) in enumerate(CASES):
            if args.only and args.only not in name:
                continue
            d = os.path.join(tmp, "case%02d" % i)
            if name == "missing model directory":
                d = os.path.join(tmp, "no_such_model_dir")
            else:
                shutil.copytree(bases[base], d)
                if mut:
                    mut(d)
            if culprits is None:  # computed by the mutator
                culprits = [move_shard_entry.tensor, "model-00001-of-00003.safetensors"]
            cmds = [["logits", "--model", d, "--prompt-ids", "1,2,3", "--out", out]]
            if level == "config":
                cmds.append(["info", "--model", d, "--json"])
            if level == "weights":  # mapped as well as read: the same checks
                cmds.append(["logits", "--model", d, "--prompt-ids", "1,2,3", "--out", out, "--mmap"])
            for cmd in cmds:
                p = U.run(args.bin, cmd, timeout=30)
                err = p.stderr.strip()
                named = any(c in err for c in culprits)
                rc = p.returncode
                why = ("rc=%d (want 2%s)" % (rc, ", killed by signal %d" % -rc if -100 < rc < 0 else "")
                       if rc != 2 else ("stderr lacks %s" % " / ".join(culprits) if not named else ""))
                rec.check("%s [%s]: exit 2, names culprit" % (name, cmd[0]), rc == 2 and named,
                          why + ("  stderr: %s" % err[-240:].replace("\n", " | ") if err else "  (no stderr)"))
    finally:
        if args.keep:
            print("models kept in " + tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return rec.finish()


if __name__ == "__main__":
    sys.exit(main())
