#!/usr/bin/env python3
"""Medians of tools/bench/ttft/run.sh's results, grouped by binary label,
prompt length and client count (the file name without -<TAG>-r<round>),
as a Markdown table, over every run (--quiet-only: over the runs that
check_load found quiet when they started, where there is one); each run's
figures and quiet/BUSY state (tools/bench/results/load.log) follow its row.

    python3 tools/bench/ttft/summary.py tools/bench/results/ttft/*.json
"""
import collections
import json
import os
import re
import statistics
import sys

RES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "results")


def load_states():
    st = {}
    try:
        for line in open(os.path.join(RES, "load.log")):
            p = line.split()
            if len(p) >= 3 and p[1].startswith("ttft-"):
                st[p[1][5:]] = p[2]
    except OSError:
        pass
    return st


def main(paths):
    quiet_only = "--quiet-only" in paths
    paths = [p for p in paths if p != "--quiet-only"]
    states = load_states()
    groups = collections.OrderedDict()
    for p in sorted(paths):
        d = json.load(open(p))
        name = d.get("label") or os.path.basename(p)[:-5]
        key = re.sub(r"-[^-]+-r\d+$", "", name)
        d["_state"] = states.get(name, "?")
        groups.setdefault(key, []).append(d)
    print("| binary, prompt, clients | runs (quiet) | gen tok/s | TTFT mean ms | median | p99 | request s |"
          " server phases, mean ms (tokenize / submit / queue / prefill / first byte) |")
    print("|---|---|---|---|---|---|---|---|")
    for key, runs in groups.items():
        quiet = ([r for r in runs if r["_state"] == "quiet"] if quiet_only else []) or runs
        med = lambda f: statistics.median(f(r) for r in quiet)
        ph = [r.get("server_phases_ms") for r in quiet if r.get("server_phases_ms")]
        phs = ""
        if ph:
            ks = ["arrival_to_tokenized", "tokenized_to_submitted", "submitted_to_scheduled",
                  "scheduled_to_first_token", "first_token_to_first_byte"]
            phs = " / ".join("%.2f" % statistics.median(x.get(k, float("nan")) for x in ph) for k in ks)
        print("| %s | %d (%d) | %.0f | %.1f | %.1f | %.1f | %.3f | %s |" % (
            key, len(runs), sum(r["_state"] == "quiet" for r in runs), med(lambda r: r["gen_tok_s"]),
            med(lambda r: 1e3 * r["ttft_mean_s"]), med(lambda r: 1e3 * r["ttft_median_s"]),
            med(lambda r: 1e3 * r["ttft_p99_s"]), med(lambda r: r["request_mean_s"]), phs))
        print("<!-- %s: %s -->" % (key, ", ".join("%.0f tok/s %.1f ms %s" % (
            r["gen_tok_s"], 1e3 * r["ttft_mean_s"], r["_state"]) for r in runs)))


if __name__ == "__main__":
    main(sys.argv[1:])
