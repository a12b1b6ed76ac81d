#!/usr/bin/env python3
"""Independent check of an exported model directory, numpy only (no PyTorch, no model.py).

 - parses the sharded safetensors by hand and checks every tensor the spec lists (names, shapes,
   dtypes, offsets inside the file, no overlap) and config.json's keys;
 - runs the model the way an inference engine does: token by token, caching only the pre-RoPE
   key per layer (hd floats), with M = I + diag(v_gate) N folded into o_proj (spec section
   "What the KV cache holds"), in float64;
 - compares the logits with tests/data/bundled_logits.json (relative to each row's max |logit|).

  python3 tools/train/check_export.py models/mfa-kr-26m tests/data/bundled_logits.json
"""
import json
import os
import struct
import sys

import numpy as np

REQUIRED_CFG = ["architectures", "model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "head_dim", "share_q_dim", "num_attention_groups", "key_reuse", "intermediate_size",
                "vocab_size", "rms_norm_eps", "rope_theta", "max_position_embeddings",
                "tie_word_embeddings", "bos_token_id", "eos_token_id"]


def read_st(path):
    with open(path, "rb") as f:
        buf = f.read()
    n = struct.unpack("<Q", buf[:8])[0]
    hdr = json.loads(buf[8:8 + n])
    base, size = 8 + n, len(buf) - 8 - n
    out, spans = {}, []
    for name, info in hdr.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        esz = {"BF16": 2, "F16": 2, "F32": 4}[info["dtype"]]
        assert 0 <= b <= e <= size, f"{path}:{name} offsets outside the file"
        assert e - b == int(np.prod(info["shape"])) * esz, f"{path}:{name} size mismatch"
        spans.append((b, e))
        raw = np.frombuffer(buf, dtype=np.uint8, count=e - b, offset=base + b)
        if info["dtype"] == "BF16":
            a = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] == "F16":
            a = raw.view(np.float16).astype(np.float32)
        else:
            a = raw.view(np.float32)
        out[name] = a.reshape(info["shape"]).astype(np.float64)
    spans.sort()
    for (b0, e0), (b1, e1) in zip(spans, spans[1:]):
        assert e0 <= b1, f"{path}: overlapping tensors"
    return out


def load(d):
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    for k in REQUIRED_CFG:
        assert k in cfg, f"config.json lacks {k}"
    assert cfg["architectures"][0] == "MFAForCausalLM" and cfg["num_attention_groups"] == 1
    with open(os.path.join(d, "model.safetensors.index.json")) as f:
        idx = json.load(f)
    W = {}
    total = 0
    for shard in sorted(set(idx["weight_map"].values())):
        assert os.path.getsize(os.path.join(d, shard)) < 16_000_000, shard
        W.update(read_st(os.path.join(d, shard)))
    for k, v in W.items():
        total += v.size * 2
        assert idx["weight_map"][k], k
    assert set(W) == set(idx["weight_map"]), "weight_map and shards disagree"
    assert idx["metadata"]["total_size"] == total, "total_size"
    d_, L, H, hd, C, I, V = (cfg[k] for k in ["hidden_size", "num_hidden_layers", "num_attention_heads",
                                              "head_dim", "share_q_dim", "intermediate_size", "vocab_size"])
    shapes = {"model.embed_tokens.weight": [V, d_], "model.norm.weight": [d_]}
    for i in range(L):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": [d_], p + "post_attention_layernorm.weight": [d_],
                       p + "mlp.gate_proj.weight": [I, d_], p + "mlp.up_proj.weight": [I, d_],
                       p + "mlp.down_proj.weight": [d_, I], p + "self_attn.q_proj.weight": [C, d_],
                       p + "self_attn.inter_norm.weight": [C], p + "self_attn.wq.weight": [H * hd, C],
                       p + "self_attn.k_proj.weight": [hd, d_], p + "self_attn.v_proj.weight": [hd, hd],
                       p + "self_attn.v_gate": [hd], p + "self_attn.o_proj.weight": [d_, H * hd]})
    for k, s in shapes.items():
        assert k in W, f"missing {k}"
        assert list(W[k].shape) == s, f"{k}: {W[k].shape} != {s}"
    extra = set(W) - set(shapes) - {"lm_head.weight"}
    assert not extra, f"unexpected tensors {extra}"
    return cfg, W


def rms(x, w, eps):
    return x / np.sqrt(np.mean(x * x) + eps) * w


def rope(x, p, theta):
    hd = x.shape[-1]
    inv = theta ** (-np.arange(0, hd, 2) / hd)
    ang = np.concatenate([p * inv, p * inv])
    rot = np.concatenate([-x[..., hd // 2:], x[..., :hd // 2]], axis=-1)
    return x * np.cos(ang) + rot * np.sin(ang)


def run(cfg, W, ids):
    L, H, hd, eps, th = (cfg[k] for k in ["num_hidden_layers", "num_attention_heads", "head_dim",
                                          "rms_norm_eps", "rope_theta"])
    lm = W.get("lm_head.weight") if not cfg["tie_word_embeddings"] else W["model.embed_tokens.weight"]
    # fold M = I + diag(v_gate) N into o_proj, once
    Wo = []
    for i in range(L):
        p = f"model.layers.{i}.self_attn."
        M = np.eye(hd) + W[p + "v_gate"][:, None] * W[p + "v_proj.weight"]
        o = W[p + "o_proj.weight"].copy()
        for h in range(H):
            o[:, h * hd:(h + 1) * hd] = o[:, h * hd:(h + 1) * hd] @ M
        Wo.append(o)
    cache = [[] for _ in range(L)]  # pre-RoPE keys only
    outs = []
    for pos, t in enumerate(ids):
        x = W["model.embed_tokens.weight"][t].copy()
        for i in range(L):
            p = f"model.layers.{i}."
            a = rms(x, W[p + "input_layernorm.weight"], eps)
            c = rms(W[p + "self_attn.q_proj.weight"] @ a, W[p + "self_attn.inter_norm.weight"], eps)
            q = (W[p + "self_attn.wq.weight"] @ c).reshape(H, hd)
            k = W[p + "self_attn.k_proj.weight"] @ a
            cache[i].append(k)
            K = np.stack(cache[i])                                     # [P, hd] pre-RoPE
            Kr = np.stack([rope(kk, j, th) for j, kk in enumerate(K)])
            qr = rope(q, pos, th)
            s = qr @ Kr.T / np.sqrt(hd)                                # [H, P]
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            o = (s @ K).reshape(-1)                                    # values = unrotated keys
            x = x + Wo[i] @ o
            m = rms(x, W[p + "post_attention_layernorm.weight"], eps)
            g = W[p + "mlp.gate_proj.weight"] @ m
            x = x + W[p + "mlp.down_proj.weight"] @ ((g / (1 + np.exp(-g))) * (W[p + "mlp.up_proj.weight"] @ m))
        outs.append(lm @ rms(x, W["model.norm.weight"], eps))
    return np.stack(outs)


def main():
    d, ref = sys.argv[1], sys.argv[2]
    cfg, W = load(d)
    n = sum(v.size for k, v in W.items())
    print(f"{d}: format OK, {len(W)} tensors, {n:,} parameters")
    with open(ref) as f:
        R = json.load(f)
    worst = 0.0
    for pr in R["prompts"]:
        lg = run(cfg, W, pr["ids"])
        for q, row in zip(pr["positions"], pr["logits"]):
            row = np.array(row)
            err = np.abs(lg[q] - row).max() / np.abs(row).max()
            worst = max(worst, err)
            print(f"  prompt of {len(pr['ids'])} tokens, position {q}: max rel err {err:.2e}, "
                  f"argmax {int(lg[q].argmax())} vs {int(row.argmax())}")
    print(f"worst relative error {worst:.2e}", "OK" if worst < 1e-3 else "FAIL")
    return 0 if worst < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
