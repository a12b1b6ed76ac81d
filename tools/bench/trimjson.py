#!/usr/bin/python3
"""Drops bench serve's per-request arrays from result JSON files (keeps the summary)."""
import json, sys
for f in sys.argv[1:]:
    r = json.load(open(f))
    for k in ("input_lens", "output_lens", "ttfts", "e2els", "itls", "generated_texts", "errors"):
        r.pop(k, None)
    json.dump(r, open(f, "w"), indent=1)
