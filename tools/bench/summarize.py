#!/usr/bin/python3
"""Reads tools/bench/results/*.json, prints the tables BENCHMARKS.md quotes and
draws docs/img/*.png. Medians across runs (files differing only in TAG)."""
import glob, json, os, re, statistics, struct, sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RES = os.environ.get("RES", os.path.join(ROOT, "tools/bench/results"))
WORK = os.environ.get("WORK", "/tmp/mfabench")
IMG = os.path.join(ROOT, "docs/img")
med = statistics.median


STATE = {}
if os.path.exists(os.path.join(RES, "load.log")):
    for line in open(os.path.join(RES, "load.log")):
        w = line.split()
        if len(w) > 2:
            STATE[w[1]] = w[2]


def files(pat, label_of):
    """Result files matching pat; those whose run was logged BUSY are left out
    when at least one quiet run exists (label_of maps a file name to its label)."""
    fs = sorted(glob.glob(os.path.join(RES, pat)))
    quiet = [f for f in fs if STATE.get(label_of(os.path.basename(f))) == "quiet"]
    return quiet or fs


def label_of(name):
    n = re.sub(r"\.(serve\.)?json$|\.txt$", "", name)
    m = re.match(r"(cap|capdec)-(.+)-(run\d+)$", n)
    if m: return f"{'capacity' if m[1] == 'cap' else m[1]}-{m[2]}-{m[3]}"
    m = re.match(r"engine-bundled-after-batch-(.+)$", n)
    if m: return f"batch-bundled-{m[1]}"
    m = re.match(r"attn-(?:4096|16)-(.+)$", n)
    if m: return f"attn-{m[1]}"
    m = re.match(r"(?:wrk-health|itl-c1|itl-c256|itl-iso-c1|itl-iso-c256)-(run\d+)-\d+$", n)
    if m: return f"frontend-{m[1]}"
    return n


def load(pat):
    return [json.load(open(f)) for f in files(pat, label_of)]


def matmul_params(model_dir):
    """Weights that take part in a matrix product per token: every 2-D tensor but
    the embedding table, plus the LM head (the embedding again when tied)."""
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    hdr = {}
    for fn in sorted(glob.glob(os.path.join(model_dir, "*.safetensors"))):
        with open(fn, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            hdr.update(json.loads(f.read(n)))
    tot = 0
    for k, v in hdr.items():
        if k == "__metadata__" or len(v["shape"]) != 2 or "embed_tokens" in k:
            continue
        tot += v["shape"][0] * v["shape"][1]
    if cfg.get("tie_word_embeddings"):
        tot += cfg["vocab_size"] * cfg["hidden_size"]
    return tot, cfg


out = []
P = out.append

# ---- capacity tables: "cap" (prefill-heavy), "capdec" (decode-heavy)
KINDS = ["mfa-kr", "mfa", "gqa", "mha"]
CAPS = {}
for name in ["cap", "capdec"]:
    cap = {k: load(f"{name}-{k}-run*.json") for k in KINDS}
    cap = {k: [r for r in v if "serve" in r] for k, v in cap.items()}
    CAPS[name] = cap
    if not all(cap.values()):
        continue
    P(f"[{name}]")
    P("| attention | KV bytes/token | blocks in 1 GiB (/metrics) | 2048-token seqs | output tok/s | req/s | p99 TTFT (s) | median TPOT (ms) | most running (server) | preemptions | runs |")
    P("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = {}
    for k in KINDS:
        rs = cap[k]
        r0 = rs[0]
        ot = med([r["serve"]["output_throughput"] for r in rs])
        rq = med([r["serve"]["request_throughput"] for r in rs])
        tt = med([r["serve"]["p99_ttft_ms"] for r in rs]) / 1000
        tp = med([r["serve"].get("median_tpot_ms") or 0 for r in rs])
        pk = max([r["serve"].get("server_max_running") or 0 for r in rs])
        pe = max([r["serve"].get("server_preemptions") or 0 for r in rs])
        rows[k] = (r0["kv_bytes_per_token"], r0["seqs_2048"], ot, rq, tt)
        P(f"| {k} | {r0['kv_bytes_per_token']} | {r0['kv_cache_num_blocks']} | {r0['seqs_2048']} | {ot:.1f} | {rq:.3f} | {tt:.1f} | {tp:.1f} | {pk:.0f} | {pe:.0f} | {len(rs)} |")
    b = rows["mfa-kr"]
    P("")
    P(f"MFA-KR / MHA: {b[1] / rows['mha'][1]:.0f}x sequences, {b[2] / rows['mha'][2]:.2f}x output tok/s; "
      f"MFA-KR / MFA: {b[1] / rows['mfa'][1]:.0f}x sequences, {b[2] / rows['mfa'][2]:.2f}x output tok/s; "
      f"MFA-KR / GQA: {b[1] / rows['gqa'][1]:.0f}x sequences, {b[2] / rows['gqa'][2]:.2f}x output tok/s")
    P("")

# ---- kv capacity at 1024 tokens
c1024 = {k: load(f"kvcap1024-{k}.json") for k in KINDS}
if all(c1024.values()):
    P("| attention | KV bytes/token | 1024-token sequences in 1 GiB |")
    P("|---|---|---|")
    for k in KINDS:
        r = c1024[k][0]
        P(f"| {k} | {r['kv_bytes_per_token']} | {r['capacity_sequences']} |")
    P("")

# ---- engine roofline
for name in ["m100", "bundled"]:
    rs = load(f"engine-{name}-run*.json")
    if not rs:
        continue
    d = med([r["decode_tokens_per_s"] for r in rs])
    c = med([r["decode_ceiling_tokens_per_s"] for r in rs])
    rat = [r["decode_vs_bandwidth"] for r in rs]
    pf = [r["prefill_vs_sgemm"] for r in rs]
    P(f"engine {name}: {rs[0]['params']/1e6:.1f}M params, {rs[0]['decode_bytes_per_token']/1e6:.1f} MB/token; "
      f"decode {d:.1f} tok/s vs ceiling {c:.1f} tok/s (bw {med([r['bandwidth_gbs'] for r in rs]):.1f} GB/s): "
      f"ratio median {med(rat)*100:.1f}% (runs {', '.join(f'{x*100:.1f}%' for x in rat)}); "
      f"prefill {med([r['prefill_tokens_per_s'] for r in rs]):.0f} tok/s = {med([r['prefill_gflops'] for r in rs]):.1f} GFLOP/s "
      f"vs sgemm {med([r['sgemm_gflops'] for r in rs]):.1f}: {med(pf)*100:.1f}%")
P("")

# ---- batch
bs = load("batch-bundled-run*.json")
if bs:
    mm, _ = matmul_params(os.path.join(ROOT, "models/default"))
    sg = [r["sgemm_gflops"] for r in load("engine-bundled-after-batch-run*.json")]
    P("| sequences | aggregate decode tok/s | vs batch 1 | projection GFLOP/s | vs sgemm |")
    P("|---|---|---|---|---|")
    for i, c in enumerate([d["concurrency"] for d in bs[0]["decode"]]):
        t = med([r["decode"][i]["tokens_per_s"] for r in bs])
        v = med([r["decode"][i]["vs_batch1"] for r in bs])
        gf = 2 * mm * t / 1e9
        P(f"| {c} | {t:.1f} | {v:.1f}x | {gf:.1f} | {gf / med(sg) * 100:.1f}% |" if sg else f"| {c} | {t:.1f} | {v:.1f}x | {gf:.1f} | - |")
    P(f"(matmul params {mm/1e6:.2f}M; sgemm {med(sg) if sg else 0:.1f} GFLOP/s, runs {sg}; batch runs {len(bs)})")
    P("")

# ---- attention
a4 = load("attn-4096-run*.json"); a16 = load("attn-16-run*.json")
if a4 and a16:
    n = min(len(a4), len(a16))
    costs = []
    for r4, r16 in zip(a4[:n], a16[:n]):  # pairs from the same run (sorted by tag)
        costs.append(1 / r4["decode_tokens_per_s"] - 1 / r16["decode_tokens_per_s"])
    bw = med([r["bandwidth_gbs"] for r in a4 + a16]) * 1e9
    sg = med([r["sgemm_gflops"] for r in a4 + a16]) * 1e9
    L, H, hd, ctx = 8, 16, 64, 4096
    kb = ctx * hd * 2 * L
    t_stream = kb / bw
    t_flop = 4 * H * hd * ctx * L / sg
    c = med(costs)
    P(f"attention @4096 (mfa-kr, 8 layers, 16 heads): cost {c*1e3:.2f} ms/token (runs {', '.join(f'{x*1e3:.2f}' for x in costs)}); "
      f"decode {med([r['decode_tokens_per_s'] for r in a4]):.1f} tok/s at ctx 4096 vs {med([r['decode_tokens_per_s'] for r in a16]):.1f} at ctx 48; "
      f"key stream {kb/2**20:.1f} MiB / {bw/1e9:.1f} GB/s = {t_stream*1e3:.3f} ms -> {c/t_stream:.1f}x; "
      f"FLOP ceiling {4*H*hd*ctx*L/1e6:.0f} MFLOP / {sg/1e9:.1f} GFLOP/s = {t_flop*1e3:.3f} ms -> {c/t_flop:.1f}x; "
      f"bound: {'compute' if t_flop > t_stream else 'bandwidth'}")
    P("")

# ---- front end
import glob as _g
wr = []
for f in files("wrk-health-*.txt", label_of):
    m = re.search(r"Requests/sec:\s*([\d.]+)", open(f).read())
    if m:
        wr.append(float(m.group(1)))
if wr:
    P(f"/health: median {med(wr):.0f} req/s (runs {', '.join(f'{x:.0f}' for x in wr)})")
for pre, what in [("itl", "shared cores"), ("itl-iso", "isolated: server on CPU 0, client on CPU 1")]:
    tags = sorted({re.match(rf"{pre}-c1-(run\d+)-", os.path.basename(f))[1]
                   for f in glob.glob(os.path.join(RES, f"{pre}-c1-run*-*.json"))})
    for tag in tags:
        i1 = load(f"{pre}-c1-{tag}-*.json"); i256 = load(f"{pre}-c256-{tag}-*.json")
        if not (i1 and i256):
            continue
        m1 = [r["median_itl_ms"] for r in i1]; m2 = [r["median_itl_ms"] for r in i256]
        P(f"{what}, {tag} ({STATE.get('frontend-' + tag, '?')}): ITL median 1 stream {med(m1):.2f} ms (runs {', '.join(f'{x:.2f}' for x in m1)}); "
          f"256 streams {med(m2):.2f} ms (runs {', '.join(f'{x:.2f}' for x in m2)}); difference {med(m2)-med(m1):.2f} ms; "
          f"p99 ITL {med([r['p99_itl_ms'] for r in i1]):.2f} vs {med([r['p99_itl_ms'] for r in i256]):.2f} ms; "
          f"peak concurrent {max(r['max_concurrent_requests'] for r in i256)}")
for f in sorted(glob.glob(os.path.join(RES, "tiny-batch-*.json"))):
    r = json.load(open(f))
    P(f"{os.path.basename(f)}: engine step alone " + ", ".join(f"{d['concurrency']} seqs {d['concurrency'] / d['tokens_per_s'] * 1e3:.2f} ms" for d in r["decode"]))

print("\n".join(out))

# ---- plots
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit(0)
os.makedirs(IMG, exist_ok=True)
for name, png in [("cap", "capacity.png"), ("capdec", "capacity-decode.png")]:
    cap = CAPS.get(name) or {}
    if not cap or not all(cap.values()):
        continue
    s0 = cap["mfa-kr"][0]["serve"]
    fig, ax = plt.subplots(1, 2, figsize=(8, 3.2), dpi=90)
    seqs = [cap[k][0]["seqs_2048"] for k in KINDS]
    ax[0].bar(KINDS, seqs, color=["#2a7", "#7a2", "#aa2", "#a52"])
    ax[0].set_title("2048-token sequences per 1 GiB\n(server /metrics)")
    for i, s in enumerate(seqs):
        ax[0].text(i, s, str(s), ha="center", va="bottom")
    ot = [med([r["serve"]["output_throughput"] for r in cap[k]]) for k in KINDS]
    ax[1].bar(KINDS, ot, color=["#2a7", "#7a2", "#aa2", "#a52"])
    ax[1].set_title(f"output tok/s, {s0['completed']} requests, 1 GiB pool\n"
                    f"input {s0['total_input_tokens'] // s0['completed']} / output {s0['total_output_tokens'] // s0['completed']}")
    for i, s in enumerate(ot):
        ax[1].text(i, s, f"{s:.0f}", ha="center", va="bottom")
    fig.tight_layout(); fig.savefig(os.path.join(IMG, png)); plt.close(fig)
if bs:
    cs = [d["concurrency"] for d in bs[0]["decode"]]
    ts = [med([r["decode"][i]["tokens_per_s"] for r in bs]) for i in range(len(cs))]
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=90)
    ax.plot(cs, ts, "o-", label="measured")
    ax.plot(cs, [ts[0] * c for c in cs], "--", color="grey", label="linear from batch 1")
    if load("engine-bundled-after-batch-run*.json"):
        mm, _ = matmul_params(os.path.join(ROOT, "models/default"))
        sgc = med([r["sgemm_gflops"] for r in load("engine-bundled-after-batch-run*.json")]) * 1e9 / (2 * mm)
        ax.axhline(sgc, color="red", ls=":", label="sgemm ceiling")
    ax.set_xscale("log", base=2); ax.set_yscale("log"); ax.set_xlabel("sequences decoding together")
    ax.set_ylabel("aggregate tokens/s"); ax.set_title("bundled model, bench batch"); ax.legend(fontsize=8)
    fig.tight_layout(); fig.savefig(os.path.join(IMG, "batch-decode.png")); plt.close(fig)
