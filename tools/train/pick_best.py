#!/usr/bin/env python3
"""Pick the better of several train.py runs (by the mean per-source held-out loss of the
exported weights) and copy it to the folder that comes back (at most 8 files):
  pick_best.py OUTDIR RUN_OUT...   -> OUTDIR/<name>/*.safetensors, meta.tar, bundled_logits.json,
                                      train.log (the pick), train_other.log (the others' logs)"""
import json, os, shutil, sys, tarfile

dst, runs = sys.argv[1], sys.argv[2:]
scores = []
for r in runs:
    try:
        with tarfile.open(os.path.join(r, "meta.tar")) as tf:
            h = json.load(tf.extractfile("history.json"))
        scores.append((h["final"]["heldout_all_sources"]["macro_loss"], r))
        print(r, "macro held-out loss", h["final"]["heldout_all_sources"]["macro_loss"],
              {k: round(v["bpb"], 4) for k, v in h["final"]["per_source"].items()})
    except Exception as ex:  # a run that failed or ran out of time
        print(r, "unusable:", ex)
if not scores:
    sys.exit("no usable run")
best = min(scores)[1]
print("picked", best)
os.makedirs(dst, exist_ok=True)
for fn in os.listdir(best):
    p = os.path.join(best, fn)
    if os.path.isdir(p):
        shutil.copytree(p, os.path.join(dst, fn))
    else:
        shutil.copyfile(p, os.path.join(dst, fn))
others = [r for r in runs if r != best and os.path.exists(os.path.join(r, "train.log"))]
if others:
    with open(os.path.join(dst, "train_other.log"), "w") as out:
        for r in others:
            out.write(f"===== {r}\n" + open(os.path.join(r, "train.log")).read())
