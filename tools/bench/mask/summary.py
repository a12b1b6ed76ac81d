#!/usr/bin/env python3
"""summary.py FILE.json...: medians over runs of `mfaserve bench mask --json`
outputs, grouped by tokenizer: per-token mask time (fresh and warm index),
masks computed/cached, compile time; then the slowest schemas by fresh
mean (median over runs). Prints Markdown for BENCHMARKS.md."""
import json
import statistics as st
import sys
from collections import defaultdict

runs = defaultdict(list)
for p in sys.argv[1:]:
    with open(p) as f:
        j = json.load(f)
    runs[(j["tokenizer"], j["vocab"])].append(j)

med = st.median
for (tok, V), rs in runs.items():
    print(f"\n{tok} ({V} ids): {len(rs)} runs, {rs[0]['schemas']} schemas, {rs[0]['instances']} instances, "
          f"{rs[0]['tokens']} tokens, bugs {[r['bugs'] for r in rs]}\n")
    print("| index | mean us | p50 us | p99 us | max us | masks computed / cached | mean of computed us |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for k in ("fresh", "warm"):
        m = [r[k]["mask"] for r in rs]
        c = [r[k]["computed"] for r in rs]
        print(f"| {k} | {med(x['mean_us'] for x in m):.1f} | {med(x['p50_us'] for x in m):.1f} | "
              f"{med(x['p99_us'] for x in m):.0f} | {med(x['max_us'] for x in m):.0f} | "
              f"{rs[0][k]['masks_computed']} / {rs[0][k]['masks_cached']} | {med(x['mean_us'] for x in c):.1f} |")
    comp = [r["compile"] for r in rs]
    print(f"\ncompile per schema: median {med(x['p50_us'] for x in comp) / 1e3:.2f} ms, mean "
          f"{med(x['mean_us'] for x in comp) / 1e3:.2f} ms, max {med(x['max_us'] for x in comp) / 1e3:.1f} ms; "
          f"vocabulary trie {med(r['vocab_build_ms'] for r in rs):.1f} ms\n")
    names = [s["name"] for s in rs[0]["per_schema"]]
    rows = []
    for i, n in enumerate(names):
        ps = [r["per_schema"][i] for r in rs]
        rows.append((med(p["fresh"]["mask"]["mean_us"] for p in ps), n, ps))
    rows.sort(reverse=True)
    print("| schema | tokens | compile ms | fresh mean us | fresh p99 us | warm mean us | warm p99 us | computed/cached (fresh) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for fm, n, ps in rows:
        print(f"| {n} | {ps[0]['tokens']} | {med(p['compile_us'] for p in ps) / 1e3:.2f} | {fm:.1f} | "
              f"{med(p['fresh']['mask']['p99_us'] for p in ps):.0f} | {med(p['warm']['mask']['mean_us'] for p in ps):.1f} | "
              f"{med(p['warm']['mask']['p99_us'] for p in ps):.0f} | "
              f"{ps[0]['fresh']['masks_computed']}/{ps[0]['fresh']['masks_cached']} |")
