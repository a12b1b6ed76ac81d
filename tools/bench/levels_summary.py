#!/usr/bin/python3
"""levels_summary.py: the tables of BENCHMARKS.md's per-level section from
tools/bench/levels.sh's results (medians over every TAG present)."""
import glob
import json
import os
import re
import statistics
import sys

RES = os.environ.get("RES", os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))


def load(pattern):
    out = []
    for p in sorted(glob.glob(os.path.join(RES, pattern))):
        try:
            with open(p) as f:
                out.append(json.load(f))
        except (OSError, ValueError):
            print("skipping unreadable %s" % p, file=sys.stderr)
    return out


def med(runs, key):
    v = [r[key] for r in runs if key in r]
    return statistics.median(v) if v else None


def levels():
    seen = []
    for p in glob.glob(os.path.join(RES, "levels-*-engine-*.json")):
        lv = re.match(r"levels-(.+?)-engine-", os.path.basename(p)).group(1)
        if lv not in seen:
            seen.append(lv)
    order = ["avx512-bf16", "avx512", "avx2", "neon", "generic"]
    return sorted(seen, key=lambda x: order.index(x) if x in order else 99)


def engine_table(lvs, models, head, key, ratio, fmt):
    """One bench-engine figure per level, thread count and model, with its ratio."""
    print("| level | threads | " + " | ".join(head.replace("%", "%%").replace("%%s", "%s") % m for m in models) + " |")
    print("|---|---|" + "---|" * len(models))
    for lv in lvs:
        for th in (2, 1):
            cells = []
            for m in models:
                r = load("levels-%s-engine-%s-t%d-*.json" % (lv, m, th))
                v, q = med(r, key), med(r, ratio)
                cells.append((fmt + " (%.0f%%)") % (v, 100 * q) if v else "-")
            print("| %s | %d | %s |" % (lv, th, " | ".join(cells)))
    print()


def main():
    lvs = levels()
    if not lvs:
        print("no levels-*.json results in %s" % RES)
        return 1
    models = ["small-f16", "small-bf16", "small-f32", "medium-f16"]
    engine_table(lvs, models, "prefill %s tok/s (% of FMA peak)", "prefill_tokens_per_s", "prefill_vs_peak", "%.0f")
    engine_table(lvs, models, "decode %s tok/s (% of read bandwidth)", "decode_tokens_per_s", "decode_vs_bandwidth",
                 "%.1f")
    concs = None
    rows = []
    for lv in lvs:
        r = load("levels-%s-batch-small-f16-t2-*.json" % lv)
        if not r:
            continue
        concs = [d["concurrency"] for d in r[0]["decode"]]
        cells = []
        for i, c in enumerate(concs):
            t = statistics.median(x["decode"][i]["tokens_per_s"] for x in r)
            v = statistics.median(x["decode"][i]["vs_peak"] for x in r)
            cells.append("%.0f (%.0f%%)" % (t, 100 * v))
        rows.append("| %s | %.0f | %s |" % (lv, med(r, "fma_peak_gflops"), " | ".join(cells)))
    if concs:
        print("| level | FMA peak GFLOP/s | " + " | ".join("%d seqs tok/s (%% of peak)" % c for c in concs) + " |")
        print("|---|---|" + "---|" * len(concs))
        print("\n".join(rows))
        print()
    print("| level | decode at mean context 4096 / 48 (tok/s) | attention ms per token | FLOP floor at the level's peak (ms) | ratio |")
    print("|---|---|---|---|---|")
    for lv in lvs:
        a, b = load("levels-%s-attn-4096-t2-*.json" % lv), load("levels-%s-attn-16-t2-*.json" % lv)
        if not a or not b:
            continue
        d_long, d_short = med(a, "decode_tokens_per_s"), med(b, "decode_tokens_per_s")
        # the long model: 16 heads of 64, 8 layers (levels.sh); QK and PV
        ctx_long, ctx_short = 4064 + 64 / 2, 16 + 64 / 2
        flops = 4.0 * 16 * 64 * 8 * (ctx_long - ctx_short)
        peak = med(a, "fma_peak_gflops") * 1e9
        dt = 1 / d_long - 1 / d_short
        print("| %s | %.1f / %.1f | %.3f | %.3f | %.2f |" % (lv, d_long, d_short, dt * 1e3, flops / peak * 1e3,
                                                             dt / (flops / peak)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
