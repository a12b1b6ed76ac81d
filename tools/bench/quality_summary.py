#!/usr/bin/python3
"""quality_summary.py DIR: the markdown tables of tools/bench/quality.sh's
results: bits per byte per text and configuration, and each configuration's
cost against the baseline (BF16 weights, F16 KV cache) on the same tokens."""
import json
import os
import sys

ORDER = ["f16kv", "f32kv", "int8kv", "int8kv-g32", "q8_0", "q8_0-f32products", "q4_0", "q4_0-f32products",
         "q8_0-int8kv"]
LABEL = {"f16kv": "BF16 weights, F16 KV (baseline)", "f32kv": "F32 KV", "int8kv": "int8 KV (scale per 64 = per head)",
         "int8kv-g32": "int8 KV (scale per 32)", "q8_0": "q8_0 weights (int8 products)",
         "q8_0-f32products": "q8_0 weights (F32 products)", "q4_0": "q4_0 weights (int8 products)",
         "q4_0-f32products": "q4_0 weights (F32 products)", "q8_0-int8kv": "q8_0 weights + int8 KV"}


def name_of(path):
    b = os.path.basename(path)
    return b[:-len(".heldout.txt")] if b.endswith(".heldout.txt") else b[:-4]


def pooled(files):
    nats = sum(f["nats"] for f in files)
    by = sum(f["bytes"] for f in files)
    import math
    return nats / math.log(2) / by, sum(f["tokens"] for f in files)


def main():
    d = sys.argv[1]
    res = {}
    for c in ORDER:
        p = os.path.join(d, c + ".json")
        if os.path.exists(p):
            res[c] = {name_of(f["name"]): f for f in json.load(open(p))["files"]}
    cfgs = [c for c in ORDER if c in res]
    base = res["f16kv"]
    names = sorted(base, key=lambda n: (n.startswith("outside-"), n))
    held = [n for n in names if not n.startswith("outside-")]
    out = [n for n in names if n.startswith("outside-")]
    print("| configuration | held-out tails, pooled (bits/byte) | cost | macro mean over sources | cost | "
          "outside texts, pooled | cost | worst source (cost) |")
    print("|---|---|---|---|---|---|---|---|")
    b_h, tok_h = pooled([base[n] for n in held])
    b_m = sum(base[n]["bpb"] for n in held) / len(held)
    b_o, tok_o = pooled([base[n] for n in out])
    for c in cfgs:
        r = res[c]
        h, _ = pooled([r[n] for n in held])
        m = sum(r[n]["bpb"] for n in held) / len(held)
        o, _ = pooled([r[n] for n in out])
        worst = max(held + out, key=lambda n: r[n]["bpb"] - base[n]["bpb"])
        print("| %s | %.4f | %+.5f | %.4f | %+.5f | %.4f | %+.5f | %s (%+.5f) |" % (
            LABEL[c], h, h - b_h, m, m - b_m, o, o - b_o, worst, r[worst]["bpb"] - base[worst]["bpb"]))
    print()
    print("Tokens scored: %d held-out (%d sources), %d outside (%s)." % (tok_h, len(held), tok_o, ", ".join(out)))
    print()
    print("| text | tokens | " + " | ".join(LABEL[c] for c in cfgs) + " |")
    print("|---|---|" + "---|" * len(cfgs))
    for n in held + out:
        print("| %s | %d | " % (n, base[n]["tokens"]) + " | ".join("%.4f" % res[c][n]["bpb"] for c in cfgs) + " |")


if __name__ == "__main__":
    main()
