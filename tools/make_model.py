#!/usr/bin/python3
"""make_model.py: write a random-weight checkpoint in the format of
/work/shared/spec/model-format.md (config.json + safetensors, single file or
HF-sharded), for tests and benchmarks; `--attention mla` writes DeepSeek-V2's
MLA (DeepseekV2ForCausalLM, docs/mla-format.md: --kv-rank, --nope-dim,
--rope-dim, --v-dim, and --q-rank as q_lora_rank, 0 for a plain q_proj).

Weights are scaled so activations stay O(1): every Linear is
normal / sqrt(fan_in), the embedding is unit normal (normal / sqrt(d) when tied, as it is then
the lm_head too), norm weights are
1 + 0.1 * normal, and the MFA-KR gate v_gate is a nonzero random vector so the
value path N k matters. The same seed and sizes give the same weights whatever
the dtype rounding or the number of shards (tensors are drawn in one fixed
order, one at a time, and written as they are drawn, so ~100M-parameter models
need only one tensor in memory).

Usable as a library too: make_model(out_dir, **options) and write_safetensors().

Run with /usr/bin/python3 (numpy). Example:
  tools/make_model.py --attention mfa-kr --dtype bf16 --params 100M --out /tmp/m
"""
import argparse
import json
import os
import sys

import numpy as np

ATTENTIONS = ("mfa", "mfa-kr", "mha", "gqa", "mqa", "mla")
DTYPES = {"f32": ("F32", 4, "float32"), "f16": ("F16", 2, "float16"),
          "bf16": ("BF16", 2, "bfloat16")}


# ---------------------------------------------------------------- encoding

def f32_to_bf16_bits(a):
    """float32 array -> uint16 bfloat16 bits, round to nearest even (NaN kept NaN)."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    out = ((bits + rounding) >> 16).astype(np.uint16)
    nan = np.isnan(a)
    if nan.any():
        out[nan] = 0x7FC0
    return out


def encode(a, dtype):
    """float32 array -> little-endian bytes of dtype ('f32'|'f16'|'bf16')."""
    if dtype == "f32":
        return np.ascontiguousarray(a, dtype="<f4").tobytes()
    if dtype == "f16":
        return np.ascontiguousarray(a).astype("<f2").tobytes()
    if dtype == "bf16":
        return f32_to_bf16_bits(a).astype("<u2").tobytes()
    raise ValueError("unknown dtype " + dtype)


def safetensors_header(entries, metadata=None):
    """entries: list of (name, st_dtype, shape, nbytes) in data order.
    Returns the header bytes (8-byte length + JSON padded with spaces to a
    multiple of 8) and the offsets dict name -> (begin, end)."""
    hdr = {}
    if metadata is not None:
        hdr["__metadata__"] = metadata
    off = 0
    offsets = {}
    for name, st_dtype, shape, nbytes in entries:
        hdr[name] = {"dtype": st_dtype, "shape": list(shape), "data_offsets": [off, off + nbytes]}
        offsets[name] = (off, off + nbytes)
        off += nbytes
    js = json.dumps(hdr, separators=(",", ":")).encode()
    js += b" " * ((-len(js)) % 8)
    return len(js).to_bytes(8, "little") + js, offsets


def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, st_dtype, shape, data_bytes). Writes one file."""
    entries = [(n, dt, sh, len(b)) for n, dt, sh, b in tensors]
    head, _ = safetensors_header(entries, metadata)
    with open(path, "wb") as f:
        f.write(head)
        for _, _, _, b in tensors:
            f.write(b)


# ---------------------------------------------------------------- model shape

def resolve(o):
    """Fill in defaults of an options dict (the CLI's names with '_')."""
    o = dict(o)
    att = o["attention"]
    if att not in ATTENTIONS:
        raise ValueError("attention must be one of %s" % (ATTENTIONS,))
    d, H = o["hidden_size"], o["heads"]
    if o.get("head_dim") is None:
        if d % H:
            raise ValueError("hidden_size %d not divisible by heads %d; give --head-dim" % (d, H))
        o["head_dim"] = d // H
    if att in ("mha",):
        o["kv_heads"] = H if o.get("kv_heads") is None else o["kv_heads"]
    elif att == "mqa":
        o["kv_heads"] = 1 if o.get("kv_heads") is None else o["kv_heads"]
    elif att == "gqa":
        o["kv_heads"] = max(1, H // 2) if o.get("kv_heads") is None else o["kv_heads"]
    else:
        o["kv_heads"] = 1
    if att in ("mfa", "mfa-kr", "mla") and o.get("q_rank") is None:
        o["q_rank"] = max(8, d // 2)
    if att == "mla":  # defaults: latent d/2, nope and value head_dim, rope head_dim/2 (even)
        hd = o["head_dim"]
        o["kv_rank"] = max(16, d // 2) if o.get("kv_rank") is None else o["kv_rank"]
        o["nope_dim"] = hd if o.get("nope_dim") is None else o["nope_dim"]
        o["rope_dim"] = max(2, hd // 4 * 2) if o.get("rope_dim") is None else o["rope_dim"]
        o["v_dim"] = hd if o.get("v_dim") is None else o["v_dim"]
        if o["rope_dim"] % 2:
            raise ValueError("rope_dim %d must be even" % o["rope_dim"])
    if o.get("intermediate") is None:
        o["intermediate"] = max(64, (8 * d // 3 + 63) // 64 * 64)
    return o


def tensor_specs(o):
    """Ordered list of (name, shape, kind) with kind in linear|embed|norm|gate."""
    d, H, hd, KV = o["hidden_size"], o["heads"], o["head_dim"], o["kv_heads"]
    I, V = o["intermediate"], o["vocab"]
    att = o["attention"]
    specs = [("model.embed_tokens.weight", (V, d), "embed")]
    for i in range(o["layers"]):
        p = "model.layers.%d." % i
        specs.append((p + "input_layernorm.weight", (d,), "norm"))
        a = p + "self_attn."
        if att == "mla":  # DeepSeek-V2's names (HF modeling_deepseek.py)
            C, r, dn, dr, dv = o["q_rank"], o["kv_rank"], o["nope_dim"], o["rope_dim"], o["v_dim"]
            if C:
                specs += [(a + "q_a_proj.weight", (C, d), "linear"),
                          (a + "q_a_layernorm.weight", (C,), "norm"),
                          (a + "q_b_proj.weight", (H * (dn + dr), C), "linear")]
            else:
                specs.append((a + "q_proj.weight", (H * (dn + dr), d), "linear"))
            specs += [(a + "kv_a_proj_with_mqa.weight", (r + dr, d), "linear"),
                      (a + "kv_a_layernorm.weight", (r,), "norm"),
                      (a + "kv_b_proj.weight", (H * (dn + dv), r), "linear"),
                      (a + "o_proj.weight", (d, H * dv), "linear")]
        elif att in ("mfa", "mfa-kr"):
            C = o["q_rank"]
            specs += [(a + "q_proj.weight", (C, d), "linear"),
                      (a + "inter_norm.weight", (C,), "norm"),
                      (a + "wq.weight", (H * hd, C), "linear"),
                      (a + "k_proj.weight", (hd, d), "linear")]
            if att == "mfa":
                specs.append((a + "v_proj.weight", (hd, d), "linear"))
            else:
                specs += [(a + "v_proj.weight", (hd, hd), "linear"),
                          (a + "v_gate", (hd,), "gate")]
        else:
            specs += [(a + "q_proj.weight", (H * hd, d), "linear"),
                      (a + "k_proj.weight", (KV * hd, d), "linear"),
                      (a + "v_proj.weight", (KV * hd, d), "linear")]
        if att != "mla":
            specs.append((a + "o_proj.weight", (d, H * hd), "linear"))
        specs += [(p + "post_attention_layernorm.weight", (d,), "norm"),
                  (p + "mlp.gate_proj.weight", (I, d), "linear"),
                  (p + "mlp.up_proj.weight", (I, d), "linear"),
                  (p + "mlp.down_proj.weight", (d, I), "linear")]
    specs.append(("model.norm.weight", (d,), "norm"))
    if not o["tie"]:
        specs.append(("lm_head.weight", (V, d), "linear"))
    return specs


def count_params(o):
    return sum(int(np.prod(s)) for _, s, _ in tensor_specs(resolve(o)))


def parse_count(s):
    s = s.strip().upper()
    mult = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9}.get(s[-1:], None)
    return int(float(s[:-1]) * mult) if mult else int(float(s))


def size_for_params(o, target):
    """Choose hidden_size (multiple of 2*head_dim), layers (~d/64, 2..48) and heads
    (d/head_dim) for about `target` parameters. Explicitly given --layers /
    --head-dim are kept."""
    best = None
    hd = o.get("head_dim") or 64
    for d in range(2 * hd, 16384 + 1, 2 * hd):  # an even number of heads
        t = dict(o)
        t["hidden_size"], t["heads"], t["head_dim"] = d, d // hd, hd
        t["layers"] = o["layers"] if o.get("_layers_given") else min(48, max(2, round(d / 64)))
        t["intermediate"], t["q_rank"] = None, None
        t["kv_rank"] = t["nope_dim"] = t["rope_dim"] = t["v_dim"] = None
        if t["attention"] in ("mha", "gqa"):
            t["kv_heads"] = None  # H, H/2
        n = count_params(t)
        if best is None or abs(n - target) < abs(best[0] - target):
            best = (n, t)
        if n > 2 * target:
            break
    return best[1]


# ---------------------------------------------------------------- writer

def config_dict(o):
    att = o["attention"]
    cfg = {"hidden_size": o["hidden_size"], "num_hidden_layers": o["layers"],
           "num_attention_heads": o["heads"], "intermediate_size": o["intermediate"],
           "vocab_size": o["vocab"], "rms_norm_eps": o["rms_norm_eps"],
           "rope_theta": o["rope_theta"], "max_position_embeddings": o["max_pos"],
           "tie_word_embeddings": bool(o["tie"]), "bos_token_id": o["bos_token_id"],
           "eos_token_id": o["eos_token_id"], "torch_dtype": DTYPES[o["dtype"]][2]}
    if att != "mla" and not (o.get("omit_head_dim") and o["head_dim"] * o["heads"] == o["hidden_size"]):
        cfg["head_dim"] = o["head_dim"]
    if att == "mla":  # as DeepSeek-V2's config.json writes it; dense: no routed experts
        cfg = dict({"architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2"}, **cfg)
        cfg.update(q_lora_rank=o["q_rank"] or None, kv_lora_rank=o["kv_rank"], qk_nope_head_dim=o["nope_dim"],
                   qk_rope_head_dim=o["rope_dim"], v_head_dim=o["v_dim"], num_key_value_heads=o["heads"],
                   n_routed_experts=None, attention_bias=False)
    elif att in ("mfa", "mfa-kr"):
        cfg = dict({"architectures": ["MFAForCausalLM"], "model_type": "mfa"}, **cfg)
        cfg.update(share_q_dim=o["q_rank"], num_attention_groups=1, key_reuse=(att == "mfa-kr"))
    else:
        cfg = dict({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}, **cfg)
        cfg["num_key_value_heads"] = o["kv_heads"]
    return cfg


def draw(rng, shape, kind, tie=False):
    n = int(np.prod(shape))
    if kind == "linear":
        return rng.standard_normal(n, dtype=np.float32).reshape(shape) * np.float32(1.0 / np.sqrt(shape[1]))
    if kind == "embed":  # tied: it is the lm_head too, keep logits O(1)
        scale = np.float32(1.0 / np.sqrt(shape[1]) if tie else 1.0)
        return rng.standard_normal(n, dtype=np.float32).reshape(shape) * scale
    if kind == "norm":
        return np.float32(1.0) + np.float32(0.1) * rng.standard_normal(n, dtype=np.float32)
    if kind == "gate":
        return np.float32(0.5) * rng.standard_normal(n, dtype=np.float32)
    raise ValueError(kind)


DEFAULTS = dict(attention="mfa", dtype="f32", hidden_size=128, layers=2, heads=4,
                head_dim=None, kv_heads=None, q_rank=None, intermediate=None, vocab=300,
                kv_rank=None, nope_dim=None, rope_dim=None, v_dim=None,
                max_pos=2048, rope_theta=10000.0, rms_norm_eps=1e-5, tie=False, shards=1,
                seed=0, bos_token_id=1, eos_token_id=2, omit_head_dim=False)


def make_model(out, quiet=True, **kw):
    """Write a model directory; returns the resolved options dict."""
    o = dict(DEFAULTS)
    o.update({k: v for k, v in kw.items()
              if v is not None or k in ("head_dim", "kv_heads", "q_rank", "kv_rank", "nope_dim", "rope_dim", "v_dim")})
    o = resolve(o)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config_dict(o), f, indent=2)
        f.write("\n")
    st_dtype, esize, _ = DTYPES[o["dtype"]]
    specs = tensor_specs(o)
    sizes = [int(np.prod(s)) * esize for _, s, _ in specs]
    nshard = max(1, min(o["shards"], len(specs)))
    # Split into nshard contiguous groups of roughly equal bytes.
    groups, total, acc = [[] for _ in range(nshard)], sum(sizes), 0
    for idx, sz in enumerate(sizes):
        g = min(nshard - 1, int(acc * nshard // max(total, 1)))
        groups[g].append(idx)
        acc += sz
    groups = [g for g in groups if g]  # (only if a huge tensor swallowed a share)
    nshard = len(groups)
    rng = np.random.default_rng(o["seed"])
    weight_map = {}
    for gi, g in enumerate(groups):
        fname = "model.safetensors" if nshard == 1 else "model-%05d-of-%05d.safetensors" % (gi + 1, nshard)
        entries = [(specs[i][0], st_dtype, specs[i][1], sizes[i]) for i in g]
        head, _ = safetensors_header(entries, {"format": "pt"})
        with open(os.path.join(out, fname), "wb") as f:
            f.write(head)
            for i in g:
                name, shape, kind = specs[i]
                f.write(encode(draw(rng, shape, kind, o["tie"]), o["dtype"]))
                weight_map[name] = fname
        if not quiet:
            print("wrote %s (%d tensors)" % (fname, len(g)), file=sys.stderr)
    if nshard > 1:
        with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
            f.write("\n")
    o["num_params"] = sum(int(np.prod(s)) for _, s, _ in specs)
    o["shards"] = nshard
    return o


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--attention", choices=ATTENTIONS, default="mfa")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="f32")
    ap.add_argument("--hidden-size", type=int, default=128)
    ap.add_argument("--layers", type=int, default=None, help="default 2 (or sized by --params)")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=None, help="default hidden/heads")
    ap.add_argument("--kv-heads", type=int, default=None, help="Llama KV heads (mha: H, gqa: H/2, mqa: 1)")
    ap.add_argument("--q-rank", type=int, default=None,
                    help="MFA share_q_dim C; MLA q_lora_rank, 0 for a plain q_proj (default hidden/2)")
    ap.add_argument("--kv-rank", type=int, default=None, help="MLA kv_lora_rank, the cached latent (default hidden/2)")
    ap.add_argument("--nope-dim", type=int, default=None, help="MLA qk_nope_head_dim (default head_dim)")
    ap.add_argument("--rope-dim", type=int, default=None, help="MLA qk_rope_head_dim, even (default head_dim/2)")
    ap.add_argument("--v-dim", type=int, default=None, help="MLA v_head_dim (default head_dim)")
    ap.add_argument("--intermediate", type=int, default=None, help="default ~8/3 hidden, multiple of 64")
    ap.add_argument("--vocab", type=int, default=300)
    ap.add_argument("--max-pos", type=int, default=2048)
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--rms-norm-eps", type=float, default=1e-5)
    ap.add_argument("--tie", action="store_true", help="tie_word_embeddings (no lm_head.weight)")
    ap.add_argument("--omit-head-dim", action="store_true",
                    help="leave head_dim out of config.json when it equals hidden/heads")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--params", type=str, default=None,
                    help="size the model for about this many parameters, e.g. 100M, 1.5B "
                         "(chooses hidden size, heads = hidden/head_dim, layers ~ hidden/64)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    o = dict(attention=a.attention, dtype=a.dtype, hidden_size=a.hidden_size,
             layers=a.layers if a.layers is not None else 2, heads=a.heads, head_dim=a.head_dim,
             kv_heads=a.kv_heads, q_rank=a.q_rank, intermediate=a.intermediate, vocab=a.vocab,
             kv_rank=a.kv_rank, nope_dim=a.nope_dim, rope_dim=a.rope_dim, v_dim=a.v_dim,
             max_pos=a.max_pos, rope_theta=a.rope_theta, rms_norm_eps=a.rms_norm_eps, tie=a.tie,
             shards=a.shards, seed=a.seed, omit_head_dim=a.omit_head_dim)
    if a.params:
        t = dict(o, _layers_given=a.layers is not None)
        t = size_for_params(t, parse_count(a.params))
        t.pop("_layers_given", None)
        o = t
    try:
        r = make_model(a.out, quiet=False, **o)
    except ValueError as e:
        print("make_model: " + str(e), file=sys.stderr)
        return 2
    keys = ("attention", "dtype", "hidden_size", "layers", "heads", "head_dim", "kv_heads", "q_rank")
    keys += ("kv_rank", "nope_dim", "rope_dim", "v_dim") if r["attention"] == "mla" else ()
    print(json.dumps({k: r[k] for k in keys + ("intermediate", "vocab", "shards", "num_params")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
