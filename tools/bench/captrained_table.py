#!/usr/bin/env python3
"""The capacity table with trained models (tools/bench/capacity_trained.sh's JSON) as Markdown.
usage: captrained_table.py RESULTS_DIR [TAG ...]: with several tags, each figure is the median over
the tags that have it (the capacity columns do not change between runs)."""
import json, os, statistics, sys

KINDS = ["mha", "gqa", "mqa", "mla", "mfa", "mfa-kr"]
LABEL = {"mha": "MHA", "gqa": "GQA (4 KV heads)", "mqa": "MQA", "mla": "MLA (latent 256 + RoPE 32)", "mfa": "MFA",
         "mfa-kr": "MFA-KR"}


def main():
    d, tags = sys.argv[1], sys.argv[2:] or ["run1"]
    rows = []
    for k in KINDS:
        runs = [json.load(open(os.path.join(d, f"captrained-{k}-{t}.json"))) for t in tags
                if os.path.exists(os.path.join(d, f"captrained-{k}-{t}.json"))]
        if not runs:
            continue
        r = runs[0]
        med = lambda f: statistics.median(f(x) for x in runs)
        rows.append((k, r, med(lambda x: x["serve"]["output_throughput"]), med(lambda x: x["serve"]["p99_ttft_ms"] / 1e3),
                     med(lambda x: x["serve"]["median_tpot_ms"]), med(lambda x: x["preemptions"]),
                     med(lambda x: x["server_max_running"] or 0), len(runs)))
    base = next((x[2] for x in rows if x[0] == "mha"), None)
    print("| attention | KV B/token (F16) | sequences the pool holds (1152 tokens) | most running (server) | output tok/s"
          + (" (x MHA)" if base else "") + " | p99 TTFT (s) | median TPOT (ms) | preemptions | held-out bpb (mean) "
          "| history / handbook bpb | steps trained | runs |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for k, r, tps, ttft, tpot, pre, run, n in rows:
        o = r["outside_bpb"]
        print(f"| {LABEL[k]} | {r['kv_bytes_per_token']:,} | {r['seqs_pool_holds']:,} | {run:.0f} | {tps:.0f}"
              + (f" ({tps / base:.1f}x)" if base else "") + f" | {ttft:.1f} | {tpot:.1f} | {pre:.0f} | "
              f"{r['heldout_macro_bpb']:.4f} | {o['outside-history']:.3f} / {o['outside-handbook']:.3f} | "
              f"{r['train_steps']} of {r['total_steps']} | {n} |")


if __name__ == "__main__":
    main()
