#!/usr/bin/python3
"""test_quant_reference.py: the C engine with quantized weights (`--quantize
q8_0|q4_0`, docs/quantized-weights.md) against the float64 reference
(tests/reference/mfa_ref.py) on random models from tools/make_model.py.
(MFA-KR: the reference with o_proj folded and v_gate 0, nothing rounded, must
equal the explicit value path to 1e-12 first.)

The quantized reference (mfa_ref.quantized_model) holds the weights the
engine computes with: every projection, the embedding and lm_head whose rows
are whole blocks of 32 go through the documented round trip
(mfa_ref.quant_roundtrip: numpy, F16-rounded scale, q * d in float64); the
others stay as stored; a tied lm_head is the one quantized embedding. For
MFA-KR the engine folds the value path into o_proj (o_proj @ (I + diag(v_gate)
v_proj) per head, rounded to float32) and quantizes the fold, and derives the
value from the stored pre-RoPE key: the reference sets o_proj to the
quantized fold and v_gate to 0 (attention_qkv: v = k + 0 * N k, the key
before RoPE).

Models (2 layers, prompt of 37 tokens): MFA-KR F32, MFA BF16 with tied
embeddings, GQA F16 (every dimension a multiple of 32: all 16-17 matrices
quantized), and two with dimensions that are not (MFA-KR hd 18, C 48, I 200,
V 301: wq, o_proj and down_proj are kept; GQA d 72, I 192: only down_proj is
quantized), and MLA (DeepseekV2ForCausalLM) F16 with every matrix quantized
and BF16 with a plain q_proj and a latent of 48 (kv_b_proj kept; the engine
reads W_UV from kv_b_proj and W_UK^T as its transpose, so both carry
kv_b_proj's quantized values and need nothing special in the reference).
Per model and type (q8_0, q4_0):
- weights: `mfaserve quantize` (the same bits as --quantize at load, the
  docs say) decodes to exactly the reference's round trip, matrix by matrix;
  a NOTE counts weights where the exact quotient x / d would round the other
  way (see "rounding" below).
- (a) `logits --quantize T --kv-dtype f32` with --chunk 0 (packed GEMM),
  --chunk 3 --threads 2 (gemm_few) and --chunk 1 (gemv), chunk 0 and 1
  also with --isa generic (the portable dequantization), and the quantized
  directory itself (--chunk 0): max|C - qref| <= TOL = 1e-3 of max|qref|
  (same weights: only float32 arithmetic differs, measured ~1e-6); argmax
  equal where the top-2 gap > GAP = 1e-3 of max|logit|.
- (b) against the exact (unquantized) reference: max|C - ref| / max|ref| <=
  TOL_EXACT = 4 * e_w, measured and printed. Derivation: the quantization
  error of matrix m is dW_m with ||dW_m||_F = eps_m ||W_m||_F (eps_m computed
  from the round trip; q8_0 ~5.4e-3, q4_0 ~8.6e-2 on these Gaussian weights:
  the error is uniform in +-d/2, d = amax/127 resp. amax/8 of a block of 32,
  amax ~ 2.1 sigma). The errors are independent of the inputs, so y = W x
  gets a relative error ~eps_m; to first order the logits get the sum of the
  per-matrix perturbations carried through the network, independent terms
  whose relative size is ~eps_m times a gain ~1 (residual connections,
  RMSNorm), so max|dlogit| / max|logit| ~ e_w = sqrt(sum_m eps_m^2) (the tied
  embedding counted twice: input and output). Gains above 1 (softmax
  sharpening, RMSNorm of a small residual) make it larger: measured
  0.42..1.47 e_w over 6 seeds (--seed 0..5000), the largest on the tied BF16
  MFA model; the factor 4 leaves 2.7x over that. (Measured errors: q8_0
  3e-3..3.5e-2 of max|logit|, q4_0 6e-2..5e-1.)
- greedy: `generate --temperature 0 --json --quantize T --kv-dtype f32`
  (16 tokens after 8 prompt tokens) equals the quantized reference's greedy
  tokens up to its first near-tie (top-2 gap < GAP); against the exact
  reference's greedy tokens the fraction that agrees up to the first
  disagreement is printed (a report), with one sane floor: the first
  disagreement must be at a position where the exact reference's top-2 gap
  is below 2 * TOL_EXACT of max|logit| (a larger gap cannot flip with
  logit errors within TOL_EXACT).

Levels with int8 products (`info --cpu --json` "int8_gemm", e.g. AVX512_VNNI)
round the activations of every product with a quantized matrix (all runs
without --isa here; prompts and decode in general) to int8 blocks of
32 (kernels.h qgemm_cols), so those runs differ from the quantized reference
by that rounding too: TOL_ACT = K_EXACT * sqrt(n_mat) * E_A, E_A = 0.006 the
relative rms error of one rounded input (step max|a| / 127 over a block of
32, max|a| ~ 2-2.5 sigma: step / sqrt(12) ~ 0.005-0.006 sigma), the n_mat
quantized products adding independently (measured 1.3e-2..2.5e-2 of
max|logit| on these models with n_mat 16-17: TOL_ACT ~ 9.6e-2). Their
exact-reference bound is TOL_EXACT + TOL_ACT, and greedy tokens are compared
up to a near-tie of TOL_ACT instead of GAP. The same runs are repeated with
--isa set to the best supported level without int8 products (its float path:
TOL, as above).

Rounding: x / d is computed as the engine's k_quantize_row and llama.cpp do,
x * (1 / d) in float32 (mfa_ref.quant_roundtrip). docs/quantized-weights.md
says "division is by the F16-rounded d" with round half to even: at exact
ties (x / d = k + 1/2, frequent with F16 / BF16 weights) the exact quotient
rounds to even and the float32 product may not; --perturb divide uses the
exact quotient and shows what that changes.

--perturb {divide,embed,fold} perturbs the quantized reference (developer
check that the tight comparisons fail: the exact-quotient rounding, the
embedding left unquantized, MFA-KR's o_proj quantized before the fold).
"""
import json
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import engine_util as U  # noqa: E402
from engine_util import MM, R  # noqa: E402

TOL = 1e-3          # engine vs quantized reference: max|err| / max|logit|
GAP = 1e-3          # argmax / greedy compared where the top-2 gap > GAP * max|logit|
K_EXACT = 4.0       # engine vs exact reference: TOL_EXACT = K_EXACT * e_w (see the docstring)
E_A = 0.006         # relative rms error of an input rounded to int8 blocks (int8-product levels)
INT8_LEVEL = None   # the default level when it has int8 products (set in main), else None
FLOAT_LEVEL = None  # the best supported level without them
PROMPT = 37
GEN_PROMPT = 8
GEN_TOKENS = 16
TYPES = ("q8_0", "q4_0")


def cases():
    base = dict(layers=2, rms_norm_eps=1e-5, rope_theta=10000.0)
    return [dict(base, attention="mfa-kr", dtype="f32", hidden_size=128, heads=4, head_dim=32, q_rank=64,
                 vocab=300, seed=301),
            dict(base, attention="mfa", dtype="bf16", hidden_size=128, heads=4, head_dim=32, q_rank=64,
                 vocab=320, tie=True, seed=302),
            dict(base, attention="gqa", dtype="f16", hidden_size=128, heads=8, kv_heads=2, head_dim=16,
                 vocab=300, seed=303),
            # not multiples of 32: wq (C 48), o_proj (H*hd 72) and down_proj (I 200) kept
            dict(base, attention="mfa-kr", dtype="bf16", hidden_size=128, heads=4, head_dim=18, q_rank=48,
                 intermediate=200, vocab=301, seed=304),
            # d 72: everything but down_proj (I 192) kept, the embedding and lm_head too
            dict(base, attention="gqa", dtype="f32", hidden_size=72, heads=4, head_dim=18, kv_heads=2,
                 intermediate=192, vocab=301, seed=305),
            # MLA: every matrix quantized (kv_b_proj too: the engine reads W_UV from it and W_UK^T
            # as its transpose, so both carry the quantized values)
            dict(base, attention="mla", dtype="f16", hidden_size=128, heads=4, head_dim=32, q_rank=64, kv_rank=64,
                 nope_dim=32, rope_dim=32, v_dim=32, vocab=300, seed=306),
            # MLA, plain q_proj, latent 48: kv_b_proj kept
            dict(base, attention="mla", dtype="bf16", hidden_size=128, heads=4, head_dim=32, q_rank=0, kv_rank=48,
                 nope_dim=16, rope_dim=16, v_dim=16, vocab=300, seed=307)]


def case_name(c):
    s = "%s/%s d%d H%d hd%d" % (c["attention"], c["dtype"], c["hidden_size"], c["heads"], c["head_dim"])
    if c.get("kv_heads"):
        s += " KV%d" % c["kv_heads"]
    if c.get("q_rank"):
        s += " C%d" % c["q_rank"]
    if c.get("intermediate"):
        s += " I%d" % c["intermediate"]
    if c.get("tie"):
        s += " tie"
    if c["attention"] == "mla":
        s += " r%d%s" % (c["kv_rank"], "" if c["q_rank"] else " q_proj")
    return s


def perturbed(m, q, qt, how):
    """The quantized reference q of m made deliberately wrong."""
    if how == "embed":
        q.w = dict(q.w, **{"model.embed_tokens.weight": m.w["model.embed_tokens.weight"]})
        q.lm_head = q.w["model.embed_tokens.weight"] if m.tie else q.lm_head
    elif how == "fold" and m.kind == "mfa-kr":
        t = R.Model()
        t.__dict__.update(m.__dict__)
        t.w = dict(m.w)
        w = dict(q.w)
        for i in range(m.L):
            n = "model.layers.%d.self_attn.o_proj.weight" % i
            if (m.H * m.hd) % R.QK == 0:
                t.w[n] = R.quant_roundtrip(m.w[n], qt)
                w[n] = R.fold_value_path(t, i)
        q.w = w
    return q


def read_quantized_dir(d):
    """name -> float64 matrix decoded from a `mfaserve quantize` directory
    (docs/quantized-weights.md: I8 / U8 values and F16 NAME_scale per block)."""
    with open(os.path.join(d, "model.safetensors"), "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    hdr = json.loads(raw[8:8 + n])
    data = raw[8 + n:]

    def arr(name, dt):
        b, e = hdr[name]["data_offsets"]
        return np.frombuffer(data[b:e], dtype=dt).reshape(hdr[name]["shape"])

    out = {}
    for name, e in hdr.items():
        if name == "__metadata__" or e["dtype"] not in ("I8", "U8"):
            continue
        sc = arr(name + "_scale", "<f2").astype(np.float64)
        r = e["shape"][0]
        if e["dtype"] == "I8":
            q = arr(name, "<i1").astype(np.float64).reshape(r, -1, R.QK)
        else:  # byte j of a block: weight j (low nibble), weight j + 16 (high nibble)
            b = arr(name, "<u1").reshape(r, -1, R.QK // 2).astype(np.int64)
            q = np.concatenate([(b & 15) - 8, (b >> 4) - 8], axis=2).astype(np.float64)
        out[name] = (q * sc[..., None]).reshape(r, -1)
    return out


def compare(rec, label, got, ref, tol, gapmin):
    scale = np.max(np.abs(ref))
    err = float(np.max(np.abs(got - ref)) / scale)
    rec.check("%s max|err|/max|logit| <= %.3g" % (label, tol), err <= tol, "err=%.2e" % err)
    if gapmin is not None:
        srt = np.sort(ref, axis=1)
        sure = (srt[:, -1] - srt[:, -2]) / scale > gapmin
        bad = np.nonzero(sure & (np.argmax(got, axis=1) != np.argmax(ref, axis=1)))[0]
        rec.check("%s argmax where gap > %g" % (label, gapmin), len(bad) == 0,
                  "%d/%d positions checked%s" % (int(sure.sum()), len(sure),
                                                 ", mismatch at %s" % bad[:8].tolist() if len(bad) else ""))
    return err


def generate(binary, d, prompt, extra):
    p = U.run(binary, ["generate", "--model", d, "--prompt-ids", U.ids_arg(prompt), "--max-tokens", GEN_TOKENS,
                       "--temperature", "0", "--json", "--kv-dtype", "f32"] + extra)
    js = None
    if p.returncode == 0:
        try:
            js = U.parse_json_stdout(p.stdout)
        except ValueError:
            js = None
    if not isinstance(js, dict) or "token_ids" not in js:
        return None, "rc=%d %s %s" % (p.returncode, p.stderr.strip()[-200:], p.stdout.strip()[-200:])
    return list(js["token_ids"]), ""


def greedy_ref(m, prompt, eos):
    toks, _, margins = R.greedy(m, prompt, GEN_TOKENS, eos=eos)
    full = R.logits(m, prompt + toks)[len(prompt) - 1:]      # row t predicts toks[t]
    rel = [margins[t] / np.max(np.abs(full[t])) for t in range(len(toks))]
    return toks, rel


def run_case(rec, args, c, tmp, summary):
    name = case_name(c)
    d = os.path.join(tmp, "m%d" % c["seed"])
    MM.make_model(d, **c)
    m = R.load_model(d)
    rng = np.random.default_rng(c["seed"])
    ids = [int(t) for t in rng.integers(3, m.V, PROMPT)]
    ref = R.logits(m, ids)
    out = os.path.join(tmp, "logits.bin")
    eos = m.cfg.get("eos_token_id")
    eos = set(eos if isinstance(eos, list) else [eos])
    prompt = ids[:GEN_PROMPT]
    ex_toks, ex_rel = greedy_ref(m, prompt, eos)
    if m.kind == "mfa-kr":   # the reference's own fold: o_proj folded, v_gate 0, nothing rounded == m
        f = R.Model()
        f.__dict__.update(m.__dict__)
        f.w = dict(m.w)
        for i in range(m.L):
            f.w["model.layers.%d.self_attn.o_proj.weight" % i] = R.fold_value_path(m, i)
            f.w["model.layers.%d.self_attn.v_gate" % i] = np.zeros(m.hd)
        e = float(np.max(np.abs(R.logits(f, ids) - ref)) / np.max(np.abs(ref)))
        rec.check("%s: reference: folded o_proj with v_gate 0 == the explicit value path" % name, e <= 1e-12,
                  "err=%.1e" % e)
    for qt in TYPES:
        lab = "%s %s" % (name, qt)
        q, rep = R.quantized_model(m, qt)
        if args.perturb:
            q = perturbed(m, q, qt, "embed" if args.perturb == "embed" else "fold") \
                if args.perturb != "divide" else R.quantized_model(m, qt, divide=True)[0]
        kept = sorted(n for n, e in rep.items() if e is None)
        eps = [e for e in rep.values() if e is not None]
        if m.tie and rep.get("model.embed_tokens.weight") is not None:
            eps.append(rep["model.embed_tokens.weight"])     # the input and the output
        e_w = float(np.sqrt(np.sum(np.square(eps))))
        tol_exact = K_EXACT * e_w
        rec.note("%s: %d matrices quantized (rms eps %.2e, e_w %.2e), %d kept%s" % (
            lab, len(eps) - (1 if m.tie else 0), float(np.sqrt(np.mean(np.square(eps)))), e_w, len(kept),
            ": " + ", ".join(k.replace("model.layers.", "L").replace(".weight", "") for k in kept[:6])
            if kept else ""))
        qref = R.logits(q, ids)

        # the weights, through `mfaserve quantize` (the same bits as --quantize at load)
        qd = d + "_" + qt
        p = U.run(args.bin, ["quantize", d, qd, "--type", qt])
        if rec.check("%s: mfaserve quantize runs" % lab, p.returncode == 0,
                     "" if p.returncode == 0 else "rc=%d %s" % (p.returncode, p.stderr.strip()[-200:])):
            dec = read_quantized_dir(qd)
            # (MFA-KR's o_proj and v_proj are stored as they were: folded and quantized at load)
            want = {n for n, e in rep.items() if e is not None and "(folded)" not in n}
            rec.check("%s: quantized tensors are the matrices whose rows are whole blocks" % lab,
                      set(dec) == want, "extra %s missing %s" % (sorted(set(dec) - want)[:4],
                                                                 sorted(want - set(dec))[:4]))
            diff = {n: int(np.sum(dec[n] != q.w[n])) for n in dec if n in q.w}
            ties = sum(int(np.sum(R.quant_roundtrip(m.w[n], qt, divide=True) != q.w[n])) for n in dec)
            bad = {n: k for n, k in diff.items() if k}
            rec.check("%s: weights decode to the reference round trip bit for bit" % lab, not bad,
                      "%d matrices differ: %s" % (len(bad), list(bad.items())[:3]) if bad else
                      "%d matrices, %d weights" % (len(diff), sum(dec[n].size for n in dec)))
            if ties:
                rec.note("%s: %d weights round the other way with the exact quotient x / d "
                         "(docs/quantized-weights.md's wording; exact ties)" % (lab, ties))

        # (a) against the quantized reference, and (b) against the exact one
        runs = [("chunk0", d, ["--chunk", "0", "--quantize", qt]),
                ("chunk0 isa %s (float path)" % FLOAT_LEVEL, d, ["--chunk", "0", "--isa", str(FLOAT_LEVEL),
                                                                 "--quantize", qt]),
                ("chunk3 threads2", d, ["--chunk", "3", "--threads", "2", "--quantize", qt]),
                ("chunk1", d, ["--chunk", "1", "--quantize", qt]),
                ("chunk0 isa generic", d, ["--chunk", "0", "--isa", "generic", "--quantize", qt]),
                ("chunk1 isa generic", d, ["--chunk", "1", "--isa", "generic", "--quantize", qt]),
                ("quantized dir chunk0", qd, ["--chunk", "0"])]
        worst_q, worst_x = 0.0, 0.0
        if FLOAT_LEVEL is None or FLOAT_LEVEL == "generic":
            runs = [r for r in runs if "float path" not in r[0]]
        n_mat = len(eps)
        tol_act = K_EXACT * np.sqrt(n_mat) * E_A
        for rl, md, extra in runs:
            got, e = U.engine_logits(args.bin, md, ids, out, extra + ["--kv-dtype", "f32"])
            if not rec.check("%s: logits %s runs" % (lab, rl), got is not None and got.shape == ref.shape, e):
                continue
            # every product with quantized weights takes the int8 path there (one row too)
            int8 = INT8_LEVEL is not None and "--isa" not in extra
            tq, gq, tx = (tol_act, tol_act, tol_exact + tol_act) if int8 else (TOL, GAP, tol_exact)
            rl8 = rl + (" (int8 products: activations rounded)" if int8 else "")
            wq = compare(rec, "%s: logits %s vs quantized reference" % (lab, rl8), got, qref, tq, gq)
            wx = compare(rec, "%s: logits %s vs exact reference" % (lab, rl8), got, ref, tx, None)
            if not int8:
                worst_q, worst_x = max(worst_q, wq), max(worst_x, wx)
            else:
                rec.note("%s: %s: %.2e of max|logit| from the quantized reference (TOL_ACT %.2e, n_mat %d)" % (
                    lab, rl8, wq, tol_act, n_mat))
        ref_q = float(np.max(np.abs(qref - ref)) / np.max(np.abs(ref)))

        # greedy: the quantized reference's tokens (up to a near-tie), the exact one's (a report)
        toks, e = generate(args.bin, d, prompt, ["--quantize", qt])
        agree = None
        if rec.check("%s: generate runs" % lab, toks is not None, e):
            q_toks, q_rel = greedy_ref(q, prompt, eos)
            n = min(len(toks), len(q_toks))
            gap_q = tol_act if INT8_LEVEL else GAP  # int8 products move logits by up to TOL_ACT
            for t in range(n):
                if q_rel[t] < gap_q:
                    rec.note("%s: generate: near-tie at %d (gap %.1e); later tokens not compared" % (lab, t, q_rel[t]))
                    n = t
                    break
            rec.check("%s: generate == quantized reference greedy (%d compared)" % (lab, n), toks[:n] == q_toks[:n],
                      "engine %s ref %s" % (toks[:n], q_toks[:n]) if toks[:n] != q_toks[:n] else "")
            n = min(len(toks), len(ex_toks))
            first = next((t for t in range(n) if toks[t] != ex_toks[t]), n)
            agree = first / float(max(n, 1))
            if first < n:
                tx2 = 2 * (tol_exact + (tol_act if INT8_LEVEL else 0))
                rec.check("%s: greedy vs exact reference: first disagreement (token %d) at a top-2 gap < "
                          "2 TOL_EXACT" % (lab, first), ex_rel[first] < tx2,
                          "gap %.2e of max|logit|, 2 TOL_EXACT %.2e" % (ex_rel[first], tx2))
            rec.note("%s: greedy agreement with the exact reference: %d/%d tokens before the first "
                     "disagreement (%.0f%%)" % (lab, first, n, 100 * agree))
        summary.append((name, qt, worst_q, worst_x, ref_q, e_w, tol_exact, agree))


def main():
    def extra(ap):
        ap.add_argument("--perturb", choices=["divide", "embed", "fold"], default=None)
        ap.add_argument("--only", default=None, help="run cases whose name contains this")
        ap.add_argument("--seed", type=int, default=0, help="added to every model's seed (other weights)")
    args = U.parse_args(extra)
    rec = U.Recorder()
    global INT8_LEVEL, FLOAT_LEVEL
    p = U.run(args.bin, ["info", "--cpu", "--json"])
    cpu = U.parse_json_stdout(p.stdout) if p.returncode == 0 else {}
    if not rec.check("info --cpu --json lists int8_gemm", isinstance(cpu.get("int8_gemm"), list), p.stderr[-200:]):
        return rec.finish()
    INT8_LEVEL = cpu["isa"] if cpu["isa"] in cpu["int8_gemm"] else None
    FLOAT_LEVEL = next((lv for lv in cpu["supported"] if lv not in cpu["int8_gemm"]), None)
    print("default level %s (%s); float path checked at %s" % (
        cpu["isa"], "int8 products" if INT8_LEVEL else "float products", FLOAT_LEVEL), flush=True)
    tmp = U.tmpdir("mfs_quantref_")
    summary = []
    t0 = time.time()
    try:
        for c in cases():
            if args.only and args.only not in case_name(c):
                continue
            c["seed"] += args.seed
            run_case(rec, args, c, tmp, summary)
    finally:
        if args.keep:
            print("models kept in " + tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print("\nmax|err| / max|logit| per model and type (worst over the logits runs):")
    print("  %-40s %-5s %10s %10s %10s %8s %9s %7s %s" % ("model", "type", "vs qref", "vs exact", "qref-exact",
                                                        "e_w", "TOL_EXACT", "ratio", "greedy agreement"))
    for n, qt, wq, wx, rq, ew, tx, ag in summary:
        print("  %-40s %-5s %10.2e %10.2e %10.2e %8.2e %9.2e %7.2f %s" % (
            n, qt, wq, wx, rq, ew, tx, wx / ew if ew else 0.0, "-" if ag is None else "%.0f%%" % (100 * ag)))
    print("%.1f s" % (time.time() - t0))
    return rec.finish()


if __name__ == "__main__":
    sys.exit(main())
