#!/usr/bin/python3
"""test_ref_selfcheck.py: checks the float64 reference (mfa_ref.py) and the
checkpoint writer (tools/make_model.py) on their own, without the engine:

- MFA-KR: the explicit value path v = k + g * N k equals the spec's fold
  (cache only pre-RoPE keys, rotate them for scores, values = raw keys,
  o_proj <- o_proj @ (I + diag(g) N) per head) to ~1e-12.
- RoPE (rotate_half form) equals a direct complex-number formulation, and
  rotated q.k depends only on the position difference.
- Whole-prompt forward equals incremental decode (token by token, chunks of 3).
- GQA equals MHA with each KV head's weights repeated over its query group.
- MLA (docs/mla-format.md): the explicit form (kv_b_proj expands the latent
  into keys and values) equals the absorbed form the engine computes (cache
  only [latent | rotated rope key], q_lat = W_UK^T q_nope, scores q_lat . c +
  q_rope . k_rope, values W_UV (sum_t p_t c_t)) to ~1e-12, with q_lora_rank
  and with a plain q_proj; de-interleave + rotate_half equals rotating the
  stored interleaved pairs (2i, 2i+1) as complex numbers, and leaving the
  de-interleave out changes the logits.
- BF16 round-to-nearest-even and F16 encoding; sharded == single-file weights;
  F16/BF16 checkpoints widen exactly to the rounded float32 values.
Exit 0 when all pass. Run: /usr/bin/python3 tests/reference/test_ref_selfcheck.py
"""
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
import mfa_ref as R  # noqa: E402
import make_model as MM  # noqa: E402

FAILS = []


def check(name, ok, detail=""):
    print("%s  %s %s" % ("PASS" if ok else "FAIL", name, detail))
    if not ok:
        FAILS.append(name)


def maxrel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def folded_mfakr_logits(m, ids):
    """MFA-KR the way the spec says the engine does it: cache holds the
    pre-RoPE key only, fold M = I + diag(g) N into o_proj."""
    ids = list(ids)
    T = len(ids)
    x = m.w["model.embed_tokens.weight"][ids]
    pos = np.arange(T)
    cos, sin = R.rope_cos_sin(pos, m.hd, m.theta)
    for i in range(m.L):
        p = "model.layers.%d.self_attn." % i
        xn = R.rmsnorm(x, m.w["model.layers.%d.input_layernorm.weight" % i], m.eps)
        c = R.rmsnorm(xn @ m.w[p + "q_proj.weight"].T, m.w[p + "inter_norm.weight"], m.eps)
        q = R.rope((c @ m.w[p + "wq.weight"].T).reshape(T, m.H, m.hd), cos, sin)
        kraw = xn @ m.w[p + "k_proj.weight"].T                     # [T, hd] cached
        krot = R.rope(kraw[:, None, :], cos, sin)[:, 0, :]          # rotated on the fly
        M = np.eye(m.hd) + m.w[p + "v_gate"][:, None] * m.w[p + "v_proj.weight"]
        Wo = m.w[p + "o_proj.weight"].copy()
        for h in range(m.H):
            Wo[:, h * m.hd:(h + 1) * m.hd] = Wo[:, h * m.hd:(h + 1) * m.hd] @ M
        o = np.zeros((T, m.H * m.hd))
        for h in range(m.H):
            s = q[:, h, :] @ krot.T / np.sqrt(m.hd)
            s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
            pr = np.exp(s - s.max(1, keepdims=True))
            pr /= pr.sum(1, keepdims=True)
            o[:, h * m.hd:(h + 1) * m.hd] = pr @ kraw
        x = x + o @ Wo.T
        x = x + R.mlp(m, i, x)
    return R.rmsnorm(x, m.w["model.norm.weight"], m.eps) @ m.lm_head.T


def absorbed_mla_logits(m, ids):
    """MLA the way docs/mla-format.md says the engine attends: per token and
    layer only the row [c | k_rope] is kept (c the normalized latent, k_rope
    the rotated shared rope key); per head the no-RoPE query is mapped into
    the latent space, q_lat = W_UK[h]^T q_nope, scores are q_lat . c_t +
    q_rope . k_rope_t over 1/sqrt(dn + dr), and the output is W_UV[h] times
    the probability-weighted latent, then o_proj."""
    ids = list(ids)
    T, H, dn, dr, dv, r = len(ids), m.H, m.dn, m.dr, m.dv, m.r
    x = m.w["model.embed_tokens.weight"][ids]
    cos, sin = R.rope_cos_sin(np.arange(T), dr, m.theta)
    causal = np.tril(np.ones((T, T), bool))
    for i in range(m.L):
        p = "model.layers.%d.self_attn." % i
        xn = R.rmsnorm(x, m.w["model.layers.%d.input_layernorm.weight" % i], m.eps)
        if m.qr:
            q = R.rmsnorm(xn @ m.w[p + "q_a_proj.weight"].T, m.w[p + "q_a_layernorm.weight"], m.eps)
            q = q @ m.w[p + "q_b_proj.weight"].T
        else:
            q = xn @ m.w[p + "q_proj.weight"].T
        q = q.reshape(T, H, dn + dr)
        a = xn @ m.w[p + "kv_a_proj_with_mqa.weight"].T
        c = R.rmsnorm(a[:, :r], m.w[p + "kv_a_layernorm.weight"], m.eps)           # cached
        k_rope = R.rope(R.deinterleave(a[:, None, r:]), cos, sin)[:, 0, :]          # cached
        q_rope = R.rope(R.deinterleave(q[:, :, dn:]), cos, sin)
        wkv = m.w[p + "kv_b_proj.weight"].reshape(H, dn + dv, r)
        o = np.zeros((T, H * dv))
        for h in range(H):
            q_lat = q[:, h, :dn] @ wkv[h, :dn, :]                                  # W_UK^T q_nope: [T, r]
            s = (q_lat @ c.T + q_rope[:, h, :] @ k_rope.T) / np.sqrt(dn + dr)
            s = np.where(causal, s, -np.inf)
            pr = np.exp(s - s.max(1, keepdims=True))
            pr /= pr.sum(1, keepdims=True)
            o[:, h * dv:(h + 1) * dv] = (pr @ c) @ wkv[h, dn:, :].T                 # W_UV out_lat
        x = x + o @ m.w[p + "o_proj.weight"].T
        x = x + R.mlp(m, i, x)
    return R.rmsnorm(x, m.w["model.norm.weight"], m.eps) @ m.lm_head.T


def rope_complex(x, p, theta):
    """x: [hd]. Pairs (i, i+hd/2) as complex numbers times e^{i p inv_freq_i}."""
    hd = x.shape[0]
    h = hd // 2
    z = x[:h] + 1j * x[h:]
    inv = np.array([theta ** (-2.0 * i / hd) for i in range(h)])
    z = z * np.exp(1j * p * inv)
    return np.concatenate([z.real, z.imag])


def main():
    rng = np.random.default_rng(1)
    tmp = tempfile.mkdtemp(prefix="mfaref_")
    prompt = [int(t) for t in rng.integers(0, 300, 23)]

    # MFA-KR: explicit vs folded.
    d = os.path.join(tmp, "kr")
    MM.make_model(d, attention="mfa-kr", hidden_size=96, heads=3, head_dim=32, layers=2, seed=3)
    m = R.load_model(d)
    check("mfa-kr v_gate nonzero", np.all(m.w["model.layers.0.self_attn.v_gate"] != 0))
    a, b = R.logits(m, prompt), folded_mfakr_logits(m, prompt)
    check("mfa-kr explicit value path == folded o_proj", maxrel(a, b) < 1e-12, "maxrel=%.2e" % maxrel(a, b))
    # ... and the value path matters (zero the gate: logits change a lot).
    m0 = R.load_model(d)
    for i in range(m0.L):
        m0.w["model.layers.%d.self_attn.v_gate" % i] = np.zeros(m0.hd)
    c = R.logits(m0, prompt)
    check("mfa-kr value path matters", maxrel(c, a) > 1e-2, "maxrel(gate=0 vs gate)=%.2e" % maxrel(c, a))

    # RoPE vs complex numbers, and relative-position property.
    hd, theta = 16, 10000.0
    xs = rng.standard_normal((5, hd))
    pos = [0, 1, 7, 100, 4095]
    cos, sin = R.rope_cos_sin(pos, hd, theta)
    got = R.rope(xs[:, None, :], cos, sin)[:, 0, :]
    want = np.stack([rope_complex(xs[j], pos[j], theta) for j in range(5)])
    check("rope == complex formulation", np.max(np.abs(got - want)) < 1e-12,
          "maxabs=%.2e" % np.max(np.abs(got - want)))
    q, k = rng.standard_normal(hd), rng.standard_normal(hd)

    def dot_at(pq, pk):
        cq, sq = R.rope_cos_sin([pq], hd, theta)
        ck, sk = R.rope_cos_sin([pk], hd, theta)
        return float(R.rope(q[None, None], cq, sq)[0, 0] @ R.rope(k[None, None], ck, sk)[0, 0])
    check("rope q.k depends on p_q - p_k only", abs(dot_at(10, 3) - dot_at(107, 100)) < 1e-10)
    check("rope position 0 is identity", np.allclose(got[0], xs[0], atol=0, rtol=0))

    # MLA: explicit == absorbed, with q_lora_rank and with a plain q_proj
    for qr in (24, 0):
        d = os.path.join(tmp, "mla%d" % qr)
        MM.make_model(d, attention="mla", hidden_size=64, heads=4, q_rank=qr, kv_rank=40, nope_dim=12,
                      rope_dim=10, v_dim=20, layers=2, seed=13)
        m = R.load_model(d)
        a, b = R.logits(m, prompt), absorbed_mla_logits(m, prompt)
        check("mla q_lora_rank=%d: explicit == absorbed form" % qr, maxrel(a, b) < 1e-12, "maxrel=%.2e" % maxrel(a, b))
    # the stored interleaved pairs (2i, 2i+1), rotated as complex numbers, are
    # what de-interleave + rotate_half computes (in halves order)
    xs = rng.standard_normal((5, hd))
    cos, sin = R.rope_cos_sin(pos, hd, theta)
    got = R.rope(R.deinterleave(xs[:, None, :]), cos, sin)[:, 0, :]
    inv = np.array([theta ** (-2.0 * i / hd) for i in range(hd // 2)])
    z = (xs[:, 0::2] + 1j * xs[:, 1::2]) * np.exp(1j * np.asarray(pos)[:, None] * inv)
    want = np.concatenate([z.real, z.imag], axis=1)
    check("mla rope: de-interleave + rotate_half == interleaved pairs as complex numbers",
          np.max(np.abs(got - want)) < 1e-12, "maxabs=%.2e" % np.max(np.abs(got - want)))
    keep = R.deinterleave
    R.deinterleave = lambda x: x
    try:
        c = R.logits(m, prompt)
    finally:
        R.deinterleave = keep
    check("mla: leaving the de-interleave out changes the logits", maxrel(c, a) > 1e-3,
          "maxrel=%.2e" % maxrel(c, a))

    # Whole prompt vs incremental decode, every kind.
    for kind, kw in [("mfa", {}), ("mfa-kr", {}), ("mha", {}), ("gqa", dict(kv_heads=2)),
                     ("mqa", {}), ("mla", {}), ("mla", dict(q_rank=0))]:
        d = os.path.join(tmp, "inc_" + kind + str(len(kw)))
        MM.make_model(d, attention=kind, hidden_size=64, heads=4, layers=2, seed=5, **kw)
        m = R.load_model(d)
        check("kind detected %s" % kind, m.kind == kind, m.kind)
        full = R.logits(m, prompt)
        cache = R.Cache(m)
        inc = np.concatenate([R.step(m, cache, [t]) for t in prompt])
        cache = R.Cache(m)
        ch3 = np.concatenate([R.step(m, cache, prompt[s:s + 3]) for s in range(0, len(prompt), 3)])
        check("%s full == token-by-token" % kind, maxrel(inc, full) < 1e-12, "maxrel=%.2e" % maxrel(inc, full))
        check("%s full == chunks of 3" % kind, maxrel(ch3, full) < 1e-12, "maxrel=%.2e" % maxrel(ch3, full))
        # prefix property: logits of a prefix do not depend on later tokens (causality)
        pre = R.logits(m, prompt[:9])
        check("%s causal prefix" % kind, maxrel(pre, full[:9]) < 1e-12)
        s = np.std(full)
        check("%s logits have spread (std %.2f)" % (kind, s), 0.3 < s < 30)

    # GQA == MHA with repeated KV weights.
    d = os.path.join(tmp, "gqa4")
    MM.make_model(d, attention="gqa", hidden_size=128, heads=8, kv_heads=2, layers=2, seed=9)
    g = R.load_model(d)
    h = R.load_model(d)
    h.KV, h.kind = h.H, "mha"
    grp = g.H // g.KV
    for i in range(g.L):
        for t in ("k_proj", "v_proj"):
            n = "model.layers.%d.self_attn.%s.weight" % (i, t)
            w = g.w[n].reshape(g.KV, g.hd, g.d)
            h.w[n] = np.repeat(w, grp, axis=0).reshape(g.H * g.hd, g.d)
    a, b = R.logits(g, prompt), R.logits(h, prompt)
    check("gqa == mha with repeated kv heads", maxrel(a, b) < 1e-12, "maxrel=%.2e" % maxrel(a, b))

    # Encodings.
    vals = np.array([1.0, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, -2.5, 3.0e38, 1e-40], dtype=np.float32)
    bits = MM.f32_to_bf16_bits(vals).tolist()
    check("bf16 round-to-nearest-even", bits[:4] == [0x3F80, 0x3F80, 0x3F82, 0xC020], [hex(x) for x in bits])
    # Checkpoint dtypes: each widens to the rounded value of the same f32 draw.
    ref = None
    for dt in ("f32", "f16", "bf16"):
        d = os.path.join(tmp, "dt_" + dt)
        MM.make_model(d, attention="mfa", hidden_size=64, heads=2, layers=1, dtype=dt, seed=11)
        w = R.load_model(d).w["model.layers.0.self_attn.wq.weight"]
        if dt == "f32":
            ref = w.astype(np.float32)
            continue
        if dt == "f16":
            want = ref.astype(np.float16).astype(np.float64)
        else:
            want = ((MM.f32_to_bf16_bits(ref).astype(np.uint32) << 16).view(np.float32)).astype(np.float64)
        check("%s weights == rounded f32" % dt, np.array_equal(w, want))
        check("%s rounding error small" % dt, np.max(np.abs(w - ref)) <= np.max(np.abs(ref)) * 2 ** -7)
    # Sharded == single file.
    d1, d3 = os.path.join(tmp, "sh1"), os.path.join(tmp, "sh3")
    MM.make_model(d1, attention="gqa", hidden_size=64, heads=4, layers=2, seed=4, dtype="bf16")
    o = MM.make_model(d3, attention="gqa", hidden_size=64, heads=4, layers=2, seed=4, dtype="bf16", shards=3)
    check("sharded into 3 files", o["shards"] == 3 and os.path.exists(os.path.join(d3, "model-00003-of-00003.safetensors")))
    w1, w3 = R.load_model(d1).w, R.load_model(d3).w
    check("sharded weights == single-file weights",
          sorted(w1) == sorted(w3) and all(np.array_equal(w1[k], w3[k]) for k in w1))
    # Header padded to a multiple of 8.
    with open(os.path.join(d1, "model.safetensors"), "rb") as f:
        n = int.from_bytes(f.read(8), "little")
    check("safetensors header length multiple of 8", n % 8 == 0, str(n))
    # Tied embeddings: no lm_head tensor; reference uses the embedding.
    d = os.path.join(tmp, "tie")
    MM.make_model(d, attention="mfa", hidden_size=64, heads=2, layers=1, tie=True)
    m = R.load_model(d)
    check("tie: no lm_head.weight, head == embedding",
          "lm_head.weight" not in m.w and m.lm_head is m.w["model.embed_tokens.weight"])

    import shutil
    shutil.rmtree(tmp, ignore_errors=True)
    print("%d failed" % len(FAILS))
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
