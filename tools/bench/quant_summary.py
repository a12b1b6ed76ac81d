#!/usr/bin/python3
"""quant_summary.py [RESULTS_DIR]: tables of tools/bench/quant.sh's results
(medians over the TAGs present): engine (prefill 512, decode 128) per weight
type, batch decode per concurrency, attention at 4096 context per KV dtype."""
import glob
import json
import os
import re
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RES = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "results")
med = statistics.median


def load(pat):
    out = {}
    for p in sorted(glob.glob(os.path.join(RES, pat))):
        m = re.search(r"-(run\w+)\.json$", p)
        out.setdefault(re.sub(r"-run\w+\.json$", "", os.path.basename(p)), []).append(json.load(open(p)))
    return out


def main():
    eng = load("quant-*-engine-*-t2-run*.json")
    levels = sorted({k.split("-engine-")[0][len("quant-"):] for k in eng})
    for lv in levels:
        print("### %s, 2 threads (medians of %d runs)\n" % (lv, len(eng.get("quant-%s-engine-none-t2" % lv, []))))
        print("| weights | bytes/token | prefill 512 tok/s | decode tok/s | decode vs DRAM probe | "
              "vs probe over the weights' size | DRAM GB/s | weights-size GB/s |")
        print("|---|---|---|---|---|---|---|---|")
        for q in ("none", "q8_0", "q4_0"):
            rs = eng.get("quant-%s-engine-%s-t2" % (lv, q))
            if not rs:
                continue
            f = lambda k: med(r[k] for r in rs)  # noqa: E731
            print("| %s | %.1f MB | %.0f | %.1f | %.2f | %.2f | %.1f | %.1f |" % (
                rs[0].get("weights", q), f("decode_bytes_per_token") / 1e6, f("prefill_tokens_per_s"),
                f("decode_tokens_per_s"), f("decode_vs_bandwidth"), f("decode_vs_bandwidth_weights_size"),
                f("bandwidth_gbs"), f("bandwidth_weights_size_gbs")))
        bat = load("quant-%s-batch-*-t2-run*.json" % lv)
        if bat:
            conc = [d["concurrency"] for d in next(iter(bat.values()))[0]["decode"]]
            print("\n| weights | " + " | ".join("%d seqs tok/s" % c for c in conc) + " |")
            print("|---|" + "---|" * len(conc))
            for q in ("none", "q8_0", "q4_0"):
                rs = bat.get("quant-%s-batch-%s-t2" % (lv, q))
                if rs:
                    print("| %s | " % rs[0].get("weights", q) + " | ".join(
                        "%.0f" % med(r["decode"][i]["tokens_per_s"] for r in rs) for i in range(len(conc))) + " |")
        att = load("quant-%s-attn-*-t2-run*.json" % lv)
        if att:
            print("\n| KV cache | decode tok/s at mean context 4096 | at 48 | attention ms per token (4096) |")
            print("|---|---|---|---|")
            for kv in ("f16", "int8"):
                a, b = att.get("quant-%s-attn-%s-4064-t2" % (lv, kv)), att.get("quant-%s-attn-%s-16-t2" % (lv, kv))
                if a and b:
                    ta, tb = med(r["decode_tokens_per_s"] for r in a), med(r["decode_tokens_per_s"] for r in b)
                    print("| %s | %.1f | %.1f | %.3f |" % (kv, ta, tb, 1000 / ta - 1000 / tb))
        print()


if __name__ == "__main__":
    main()
