#!/usr/bin/env python3
"""Tables and plot of the paper replication (docs/paper-replication.md) from the runs'
history.json / final.json (replicate_device.sh's results.tar, unpacked):
  replication_table.py RUNS_DIR OUT_DIR [PNG]
writes OUT_DIR/summary.csv (one row per run), OUT_DIR/per_source.csv (held-out and outside
bits/byte per source and run), prints the Markdown table, and draws PNG (held-out bits/byte
against F16 KV bytes per token, log x; needs matplotlib)."""
import csv, json, os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import kv_bytes_per_token  # noqa: E402

ORDER = ["mha", "gqa", "mqa", "mla", "mfa", "mfa-kr"]
LABEL = {"mha": "MHA", "gqa": "GQA (4 KV heads)", "mqa": "MQA", "mla": "MLA", "mfa": "MFA", "mfa-kr": "MFA-KR"}
OUTSIDE = ["outside-handbook", "outside-history", "outside-jargon"]


def load(runs_dir):
    runs = []
    for name in sorted(os.listdir(runs_dir)):
        d = os.path.join(runs_dir, name)
        hp, fp = os.path.join(d, "history.json"), os.path.join(d, "final.json")
        if not os.path.isfile(hp):
            continue
        h = json.load(open(hp))
        f = json.load(open(fp)) if os.path.isfile(fp) else None
        meta = h["meta"]
        # int8 bytes as the engine lays them out (model.py), also for runs that recorded an older estimate
        meta["kv_bytes_int8"] = kv_bytes_per_token(meta["cfg"], "int8")
        r = dict(run=name, kind=meta["kind"], seed=meta["seed"], meta=meta, final=f, history=h["history"])
        if f:  # the float32 evaluation of the best (bf16-rounded) weights
            ps = {k: v["bpb"] for k, v in f["per_source"].items()}
            r.update(done=True, steps=f["steps"], tokens=f["tokens_seen"], best_step=f["best_step"],
                     cut_short=f.get("cut_short"), pooled=f["heldout_all_sources"]["bpb"])
        else:  # cut short before the end: the last periodic (bf16) evaluation
            e = min(h["history"], key=lambda e: e["heldout"]["macro_loss"])
            ps = {k: v[1] for k, v in e["per_source"].items()}
            r.update(done=False, steps=e["step"], tokens=e["tokens"], best_step=e["step"],
                     cut_short=True, pooled=e["heldout"]["bpb"])
        src = [k for k in ps if not k.startswith("outside-")]
        r.update(per_source=ps, sources=src, macro=sum(ps[k] for k in src) / len(src))
        runs.append(r)
    runs.sort(key=lambda r: (ORDER.index(r["kind"]), r["seed"]))
    return runs


def main():
    runs_dir, out_dir = sys.argv[1], sys.argv[2]
    png = sys.argv[3] if len(sys.argv) > 3 else None
    runs = load(runs_dir)
    os.makedirs(out_dir, exist_ok=True)
    cols = ["run", "kind", "seed", "params", "attention_params", "intermediate_size", "kv_elements_per_layer",
            "kv_bytes_f16", "kv_bytes_int8", "steps", "tokens", "best_step", "finished", "heldout_mean_bpb",
            "heldout_pooled_bpb"] + OUTSIDE
    with open(os.path.join(out_dir, "summary.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in runs:
            m = r["meta"]
            w.writerow([r["run"], r["kind"], r["seed"], m["params"], m["attention_params"], m["intermediate_size"],
                        m["kv_elements_per_layer"], m["kv_bytes_f16"], m["kv_bytes_int8"], r["steps"], r["tokens"],
                        r["best_step"], int(r["done"] and not r["cut_short"]), f"{r['macro']:.4f}",
                        f"{r['pooled']:.4f}"] + [f"{r['per_source'].get(k, float('nan')):.4f}" for k in OUTSIDE])
    names = sorted({k for r in runs for k in r["per_source"]}, key=lambda k: (k.startswith("outside-"), k))
    with open(os.path.join(out_dir, "per_source.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["source"] + [r["run"] for r in runs])
        for k in names:
            w.writerow([k] + [f"{r['per_source'].get(k, float('nan')):.4f}" for r in runs])
    print("| kind | seed | parameters | KV bytes/token F16 | int8 | held-out bpb (mean of sources) | pooled | handbook | history | jargon | tokens |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        m, p = r["meta"], r["per_source"]
        print(f"| {LABEL[r['kind']]} | {r['seed']} | {m['params'] / 1e6:.2f}M | {m['kv_bytes_f16']:,} | {m['kv_bytes_int8']:,} | "
              f"**{r['macro']:.4f}** | {r['pooled']:.4f} | " + " | ".join(f"{p.get(k, float('nan')):.4f}" for k in OUTSIDE)
              + f" | {r['tokens'] / 1e6:.0f}M{'' if r['done'] and not r['cut_short'] else ' (cut short)'} |")
    if png:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
        for r in runs:
            x, y = r["meta"]["kv_bytes_f16"], r["macro"]
            first = r["seed"] == min(q["seed"] for q in runs if q["kind"] == r["kind"])
            ax.scatter([x], [y], s=45 if first else 30, marker="o" if first else "x",
                       color="C%d" % ORDER.index(r["kind"]), zorder=3)
            if first:
                ax.annotate(LABEL[r["kind"]], (x, y), textcoords="offset points", xytext=(6, 5), fontsize=9)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1024:g} KiB"))
        ax.set_xlim(700, 48000)
        ax.set_xlabel("KV cache per token, F16 bytes (all 8 layers; log scale)")
        ax.set_ylabel("held-out bits per byte (mean of 32 sources)")
        ax.set_title(f"Six attention kinds, 29.1M parameters, {runs[0]['tokens'] / 1e6:.0f}M tokens each,\n"
                     "same data, schedule and seed (x: a second seed)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        fig.savefig(png)


if __name__ == "__main__":
    main()
