#!/usr/bin/env python3
"""A trained model (any kind tools/train makes) in the C engine against the logits PyTorch computed
at export (RUN/bundled_logits.json: float32 from the exported bf16 shards): prints the largest
relative error (max |error| / max |logit| per stored row) and whether every row's argmax agrees,
for whole-prompt and token-by-token feeding. Exit 1 if any row is beyond 1e-3 or disagrees.
usage: check_engine.py --bin build/mfaserve --model RUN/model --ref RUN/bundled_logits.json"""
import argparse, json, os, subprocess, sys, tempfile

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--ref", required=True)
    a = ap.parse_args()
    ref = json.load(open(a.ref))
    worst, agree, rows = 0.0, True, 0
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "lg.bin")
        for p in ref["prompts"]:
            ids = p["ids"]
            for chunk in (0, 1):
                subprocess.run([a.bin, "logits", "--model", a.model, "--kv-dtype", "f32", "--chunk", str(chunk),
                                "--prompt-ids", ",".join(map(str, ids)), "--out", out], check=True,
                               stderr=subprocess.DEVNULL)
                got = np.fromfile(out, dtype=np.float32).reshape(len(ids), -1)
                for pos, row, am in zip(p["positions"], p["logits"], p["argmax"]):
                    row = np.asarray(row, dtype=np.float64)
                    worst = max(worst, float(np.abs(got[pos] - row).max() / np.abs(row).max()))
                    agree &= int(got[pos].argmax()) == am
                    rows += 1
    info = json.loads(subprocess.run([a.bin, "info", "--model", a.model, "--json"], check=True,
                                     capture_output=True, text=True).stdout)
    ok = worst <= 1e-3 and agree
    print(json.dumps(dict(model=a.model, attention=info.get("attention"), rows=rows, max_rel_err=worst,
                          argmax_agree=agree, ok=ok)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
