#!/usr/bin/python3
"""mfa_ref.py: the float64 numpy reference forward pass for MFA, MFA-KR,
Llama (MHA/GQA/MQA) and DeepSeek-V2 MLA models, written directly from
/work/shared/spec/model-format.md and docs/mla-format.md, independent of the
C engine.

Plain, obvious code on purpose: full-sequence causal attention over the whole
prompt, and for MFA-KR the explicit value path v = k + v_gate * (N k) with k
the key before RoPE (not the o_proj fold the engine uses), so a comparison
checks the engine's fold. MLA likewise in the explicit form: kv_b_proj expands
the latent into every head's no-RoPE key and value, each head's key is
[k_nope | k_rope] (not the absorbed form the engine attends in). Weights
stored as F32/F16/BF16 are widened to float64 exactly; all arithmetic is
float64.

API:
  m = load_model(dir)              # single file or sharded
  logits(m, ids)         -> [T, V] float64
  greedy(m, ids, n)      -> (token_ids, logprobs) (log_softmax in float64)
  quantized_model(m, "q8_0"|"q4_0") -> (model with the weights --quantize
                            computes with, per-matrix relative errors)
  Incremental decode (used by the self-checks): Cache / step()
CLI: mfa_ref.py DIR 1,2,3 [--generate N]
"""
import json
import os
import sys

import numpy as np

# ---------------------------------------------------------------- loading

_ST_DTYPES = {"F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2)}


def read_safetensors(path):
    """Returns name -> float64 array. Strict: raises ValueError on anything malformed."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError("%s: too short" % path)
    n = int.from_bytes(raw[:8], "little")
    if 8 + n > len(raw):
        raise ValueError("%s: header length %d beyond file" % (path, n))
    hdr = json.loads(raw[8:8 + n].decode())
    data = raw[8 + n:]
    out = {}
    for name, e in hdr.items():
        if name == "__metadata__":
            continue
        npdt, size = _ST_DTYPES[e["dtype"]]
        b, en = e["data_offsets"]
        shape = tuple(e["shape"])
        if en - b != int(np.prod(shape)) * size or en > len(data):
            raise ValueError("%s: %s: bad data_offsets" % (path, name))
        a = np.frombuffer(data, dtype=npdt, count=int(np.prod(shape)), offset=b)
        if e["dtype"] == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[name] = a.astype(np.float64).reshape(shape)
    return out


class Model:
    pass


def load_model(d):
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    arch = cfg["architectures"][0]
    m = Model()
    m.cfg = cfg
    m.d = cfg["hidden_size"]
    m.L = cfg["num_hidden_layers"]
    m.H = cfg["num_attention_heads"]
    m.hd = cfg.get("head_dim", m.d // m.H)
    m.V = cfg["vocab_size"]
    m.eps = cfg.get("rms_norm_eps", 1e-6)
    m.theta = cfg.get("rope_theta", 10000.0)
    m.tie = cfg.get("tie_word_embeddings", False)
    if arch == "MFAForCausalLM":
        assert cfg.get("num_attention_groups", 1) == 1
        m.kind = "mfa-kr" if cfg.get("key_reuse", False) else "mfa"
        m.KV = 1
        m.C = cfg["share_q_dim"]
    elif arch == "LlamaForCausalLM":
        m.KV = cfg.get("num_key_value_heads", m.H)
        m.kind = "mha" if m.KV == m.H else ("mqa" if m.KV == 1 else "gqa")
    elif arch == "DeepseekV2ForCausalLM":
        # one cached row per token (latent + rope key): one KV "head", as the engine reports
        m.kind = "mla"
        m.KV = 1
        m.qr = cfg.get("q_lora_rank") or 0
        m.r = cfg["kv_lora_rank"]
        m.dn, m.dr, m.dv = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
        m.hd = m.dn + m.dr        # query/key length of a head; the softmax scale is 1/sqrt(hd)
    else:
        raise ValueError("unknown architecture " + arch)
    idx = os.path.join(d, "model.safetensors.index.json")
    w = {}
    if os.path.exists(idx):
        with open(idx) as f:
            wm = json.load(f)["weight_map"]
        for fn in sorted(set(wm.values())):
            w.update(read_safetensors(os.path.join(d, fn)))
    else:
        w = read_safetensors(os.path.join(d, "model.safetensors"))
    m.w = w
    m.lm_head = w["model.embed_tokens.weight"] if m.tie else w["lm_head.weight"]
    return m


# ---------------------------------------------------------------- math

def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def silu(x):
    return x / (1.0 + np.exp(-x))


def rope_cos_sin(positions, hd, theta):
    """cos, sin: [T, hd], the half-table repeated over the two halves."""
    inv_freq = theta ** (-(2.0 * np.arange(hd // 2)) / hd)          # [hd/2]
    ang = np.asarray(positions, dtype=np.float64)[:, None] * inv_freq  # [T, hd/2]
    ang = np.concatenate([ang, ang], axis=-1)                          # [T, hd]
    return np.cos(ang), np.sin(ang)


def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def rope(x, cos, sin):
    """x: [T, heads, hd]; cos/sin: [T, hd]."""
    return x * cos[:, None, :] + rotate_half(x) * sin[:, None, :]


def deinterleave(x):
    """DeepSeek-V2 stores the RoPE part of q and k as interleaved pairs
    [x0, y0, x1, y1, ...]; its HF code regroups them into halves
    [x0, x1, ..., y0, y1, ...] before rotate_half (docs/mla-format.md)."""
    return np.concatenate([x[..., 0::2], x[..., 1::2]], axis=-1)


def kv_int8(x, group):
    """x [T, heads, hd] as an int8 KV cache stores it and reads it back (the
    documented layout, kvcache.h): per token, groups of `group` consecutive
    elements of the row (heads one after another) share the F16 scale
    s = max|x| / 127, q = round-half-even(x / s) clipped to +-127, read as q * s."""
    T = x.shape[0]
    g = x.reshape(T, -1, group)
    s = (np.abs(g).max(axis=2, keepdims=True) / 127.0).astype(np.float16).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(s > 0, np.clip(np.rint(g / np.where(s > 0, s, 1)), -127, 127), 0)
    return (q * s).reshape(x.shape)


def mla_qkv(m, i, xn, positions, kv_group=None):
    """MLA layer i in the explicit form: q and k [T, H, dn + dr] (each head's
    [nope | rotated rope]), v [T, H, dv]. kv_group: the latent and the rotated
    rope key as an int8 cache stores them (one row [latent | rope key] per
    token, groups of kv_group consecutive elements)."""
    w, p = m.w, "model.layers.%d.self_attn." % i
    T, H, dn, dr, dv, r = xn.shape[0], m.H, m.dn, m.dr, m.dv, m.r
    if m.qr:
        q = rmsnorm(xn @ w[p + "q_a_proj.weight"].T, w[p + "q_a_layernorm.weight"], m.eps) @ w[p + "q_b_proj.weight"].T
    else:
        q = xn @ w[p + "q_proj.weight"].T
    q = q.reshape(T, H, dn + dr)
    kv_a = xn @ w[p + "kv_a_proj_with_mqa.weight"].T                  # [T, r + dr]
    c = rmsnorm(kv_a[:, :r], w[p + "kv_a_layernorm.weight"], m.eps)   # [T, r] the cached latent
    cos, sin = rope_cos_sin(positions, dr, m.theta)
    q_pe = rope(deinterleave(q[:, :, dn:]), cos, sin)                 # [T, H, dr]
    k_pe = rope(deinterleave(kv_a[:, None, r:]), cos, sin)            # [T, 1, dr] shared by the heads
    if kv_group:
        row = kv_int8(np.concatenate([c, k_pe[:, 0, :]], axis=-1)[:, None, :], kv_group)[:, 0, :]
        c, k_pe = row[:, :r], row[:, None, r:]
    kv = (c @ w[p + "kv_b_proj.weight"].T).reshape(T, H, dn + dv)
    k = np.concatenate([kv[:, :, :dn], np.broadcast_to(k_pe, (T, H, dr))], axis=-1)
    return np.concatenate([q[:, :, :dn], q_pe], axis=-1), k, kv[:, :, dn:]


def attention_qkv(m, i, xn, positions, kv_group=None):
    """Per-token q [T,H,hd], rotated k [T,KV,hd], v [T,KV,hd] of layer i
    (MLA: k [T,H,hd], v [T,H,dv]). kv_group: keys and values as an int8
    cache with that group holds them (MFA-KR: the key before RoPE, which the
    value is derived from; MLA: the latent and the rotated rope key)."""
    if m.kind == "mla":
        return mla_qkv(m, i, xn, positions, kv_group)
    kvq = (lambda x: kv_int8(x, kv_group)) if kv_group else (lambda x: x)
    w, p = m.w, "model.layers.%d.self_attn." % i
    T = xn.shape[0]
    if m.kind in ("mfa", "mfa-kr"):
        c = rmsnorm(xn @ w[p + "q_proj.weight"].T, w[p + "inter_norm.weight"], m.eps)  # [T, C]
        q = (c @ w[p + "wq.weight"].T).reshape(T, m.H, m.hd)
        k = (xn @ w[p + "k_proj.weight"].T).reshape(T, 1, m.hd)
        if m.kind == "mfa":
            v = kvq((xn @ w[p + "v_proj.weight"].T).reshape(T, 1, m.hd))
        else:  # explicit value path, from the key BEFORE RoPE (cached as it is)
            k = kvq(k)
            v = k + w[p + "v_gate"] * (k @ w[p + "v_proj.weight"].T)
            kvq = lambda x: x  # noqa: E731  (stored before RoPE: nothing more to round)
    else:
        q = (xn @ w[p + "q_proj.weight"].T).reshape(T, m.H, m.hd)
        k = (xn @ w[p + "k_proj.weight"].T).reshape(T, m.KV, m.hd)
        v = kvq((xn @ w[p + "v_proj.weight"].T).reshape(T, m.KV, m.hd))
    cos, sin = rope_cos_sin(positions, m.hd, m.theta)
    return rope(q, cos, sin), kvq(rope(k, cos, sin)), v


def attend(m, q, k, v, qpos, kpos):
    """q [Tq,H,hd]; k [Tk,KV,hd], v [Tk,KV,dv] (dv = hd but for MLA); causal by
    position. Returns [Tq, H*dv]."""
    Tq, dv = q.shape[0], v.shape[-1]
    group = m.H // k.shape[1]
    out = np.zeros((Tq, m.H, dv))
    mask = np.asarray(kpos)[None, :] <= np.asarray(qpos)[:, None]  # [Tq, Tk]
    for h in range(m.H):
        kh, vh = k[:, h // group, :], v[:, h // group, :]
        s = q[:, h, :] @ kh.T / np.sqrt(m.hd)                 # [Tq, Tk]
        s = np.where(mask, s, -np.inf)
        s = s - s.max(axis=1, keepdims=True)
        pr = np.exp(s)
        pr /= pr.sum(axis=1, keepdims=True)
        out[:, h, :] = pr @ vh
    return out.reshape(Tq, m.H * dv)


def mlp(m, i, x):
    w, p = m.w, "model.layers.%d." % i
    hn = rmsnorm(x, w[p + "post_attention_layernorm.weight"], m.eps)
    g = hn @ w[p + "mlp.gate_proj.weight"].T
    u = hn @ w[p + "mlp.up_proj.weight"].T
    return (silu(g) * u) @ w[p + "mlp.down_proj.weight"].T


def logits(m, ids, kv_group=None):
    """Full-sequence causal forward. ids: list of ints. Returns [T, V] float64.
    kv_group: attend to keys and values as an int8 KV cache holds them."""
    ids = list(ids)
    x = m.w["model.embed_tokens.weight"][ids]           # [T, d]
    pos = np.arange(len(ids))
    for i in range(m.L):
        xn = rmsnorm(x, m.w["model.layers.%d.input_layernorm.weight" % i], m.eps)
        q, k, v = attention_qkv(m, i, xn, pos, kv_group)
        o = attend(m, q, k, v, pos, pos)
        x = x + o @ m.w["model.layers.%d.self_attn.o_proj.weight" % i].T
        x = x + mlp(m, i, x)
    return rmsnorm(x, m.w["model.norm.weight"], m.eps) @ m.lm_head.T


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def greedy(m, ids, n, eos=None, kv_group=None):
    """Greedy generation by re-running the full sequence each step.
    Returns (token_ids, logprobs, margins): margins[t] = top1 - top2 logit.
    Stops after an eos token when eos (int or set) is given."""
    seq, toks, lps, margins = list(ids), [], [], []
    eos = set([eos] if isinstance(eos, int) else (eos or []))
    for _ in range(n):
        z = logits(m, seq, kv_group)[-1]
        t = int(np.argmax(z))
        top2 = np.sort(z)[-2:]
        toks.append(t)
        lps.append(float(log_softmax(z)[t]))
        margins.append(float(top2[1] - top2[0]))
        seq.append(t)
        if t in eos:
            break
    return toks, lps, margins


# ---------------------------------------------------------------- quantized weights

QK = 32  # weights per block (docs/quantized-weights.md)


def quant_roundtrip(w, qtype, divide=False):
    """The rows of w [r, c] (c % 32 == 0) quantized as
    docs/quantized-weights.md documents (llama.cpp's Q8_0 / Q4_0 blocks of 32)
    and read back, float64. The engine quantizes float32 values: w is taken
    as float32 (exact for weights widened from F32/F16/BF16), the scale is the
    F16 rounding of the float32 quotient (as llama.cpp computes it):
      q8_0: d = f16(max|x| / 127), q = clip(round(x / d), -127, 127)
      q4_0: m = the element of largest magnitude with its sign (the first of
            equal magnitudes), d = f16(m / -8), q = clip(round(x / d), -8, 7)
    round half to even, w = q * d (exact). A block of zeros has d = +-0 and
    reads back as 0. x / d is computed as llama.cpp and the engine's
    k_quantize_row do, x * (1 / d) in float32 (two roundings); with
    divide=True as the exact quotient. The two differ only where x / d is
    within a float32 rounding of a half-integer; F16 / BF16 weights hit
    exact ties (x / d = k + 1/2) often, where the exact quotient rounds to
    even and the float32 product may not."""
    x = np.asarray(w, dtype=np.float32)
    r, c = x.shape
    if c % QK:
        raise ValueError("rows of %d are not whole blocks of %d" % (c, QK))
    b = x.reshape(r, c // QK, QK)
    if qtype == "q8_0":
        s = np.abs(b).max(axis=2, keepdims=True) / np.float32(127)
        lo, hi = -127, 127
    elif qtype == "q4_0":
        idx = np.abs(b).argmax(axis=2)[..., None]
        s = np.take_along_axis(b, idx, axis=2) / np.float32(-8)
        lo, hi = -8, 7
    else:
        raise ValueError("unknown quantization type " + qtype)
    d16 = s.astype(np.float32).astype(np.float16)
    d = d16.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if divide:
            t = b.astype(np.float64) / np.where(d != 0, d, 1)
        else:
            t = (b * (np.float32(1) / np.where(d != 0, d16.astype(np.float32), np.float32(1)))).astype(np.float64)
        q = np.where(d != 0, np.clip(np.rint(t), lo, hi), 0)
    return (q * d).reshape(r, c)


def fold_value_path(m, i):
    """MFA-KR layer i: o_proj with the value path folded in, per head
    o_proj[:, h] @ (I + diag(v_gate) v_proj) (model-format.md), float64."""
    p = "model.layers.%d.self_attn." % i
    M = np.eye(m.hd) + m.w[p + "v_gate"][:, None] * m.w[p + "v_proj.weight"]
    o = m.w[p + "o_proj.weight"].reshape(m.d, m.H, m.hd)
    return np.einsum("dhi,ij->dhj", o, M).reshape(m.d, m.H * m.hd)


def quantized_model(m, qtype, divide=False):
    """A copy of m whose weights are the ones the engine computes with after
    `--quantize qtype` (docs/quantized-weights.md): every projection, the
    embedding and lm_head (one copy when tied) whose rows are whole blocks of
    32 go through quant_roundtrip; the others stay as stored. MFA-KR: o_proj
    is folded with the value path first (rounded to float32, as the engine
    stores the fold) and then quantized; the value is then the cached key
    itself, so v_gate is set to 0 (attention_qkv: v = k + 0 * N k = the key
    before RoPE). divide: see quant_roundtrip. Returns (model, report):
    report maps each matrix name to its relative error
    ||Q(W) - W||_F / ||W||_F, or None where kept."""
    q = Model()
    q.__dict__.update(m.__dict__)
    w = dict(m.w)
    rep = {}

    def do(name, mat):
        if mat.shape[1] % QK:
            rep[name] = None
            return mat
        qm = quant_roundtrip(mat, qtype, divide)
        rep[name] = float(np.linalg.norm(qm - mat) / max(np.linalg.norm(mat), 1e-300))
        return qm

    for name in sorted(w):
        if name.endswith(".weight") and w[name].ndim == 2:
            if m.kind == "mfa-kr" and name.endswith(("self_attn.o_proj.weight", "self_attn.v_proj.weight")):
                continue
            w[name] = do(name, w[name])
    if m.kind == "mfa-kr":
        for i in range(m.L):
            p = "model.layers.%d.self_attn." % i
            folded = fold_value_path(m, i).astype(np.float32).astype(np.float64)
            w[p + "o_proj.weight"] = do(p + "o_proj.weight (folded)", folded)
            w[p + "v_gate"] = np.zeros_like(m.w[p + "v_gate"])
    q.w = w
    q.lm_head = w["model.embed_tokens.weight"] if m.tie else w["lm_head.weight"]
    return q, rep


# ---------------------------------------------------------------- incremental

class Cache:
    """Per-layer lists of rotated k and v, as a KV cache would hold them
    (MLA: each head's expanded key and value, the explicit form)."""

    def __init__(self, m):
        self.k = [None] * m.L
        self.v = [None] * m.L
        self.n = 0


def step(m, cache, ids):
    """Feed ids at positions cache.n.. ; returns their logits [len(ids), V]."""
    ids = list(ids)
    pos = np.arange(cache.n, cache.n + len(ids))
    x = m.w["model.embed_tokens.weight"][ids]
    for i in range(m.L):
        xn = rmsnorm(x, m.w["model.layers.%d.input_layernorm.weight" % i], m.eps)
        q, k, v = attention_qkv(m, i, xn, pos)
        cache.k[i] = k if cache.k[i] is None else np.concatenate([cache.k[i], k])
        cache.v[i] = v if cache.v[i] is None else np.concatenate([cache.v[i], v])
        o = attend(m, q, cache.k[i], cache.v[i], pos, np.arange(cache.n + len(ids)))
        x = x + o @ m.w["model.layers.%d.self_attn.o_proj.weight" % i].T
        x = x + mlp(m, i, x)
    cache.n += len(ids)
    return rmsnorm(x, m.w["model.norm.weight"], m.eps) @ m.lm_head.T


def main(argv):
    if len(argv) < 3:
        print("usage: mfa_ref.py MODEL_DIR 1,2,3 [--generate N]", file=sys.stderr)
        return 2
    m = load_model(argv[1])
    ids = [int(t) for t in argv[2].split(",")]
    if "--generate" in argv:
        n = int(argv[argv.index("--generate") + 1])
        toks, lps, _ = greedy(m, ids, n)
        print(json.dumps({"prompt_ids": ids, "token_ids": toks, "logprobs": lps}))
    else:
        z = logits(m, ids)
        print("kind=%s T=%d V=%d argmax=%s" % (m.kind, z.shape[0], z.shape[1], z.argmax(1).tolist()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
