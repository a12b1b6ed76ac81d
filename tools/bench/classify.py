#!/usr/bin/python3
"""Marks each run in results/load.log BUSY when monitor.sh saw another process using
>= 20% of a CPU between the run's start (its load.log line) and the newest of its
result files, and quiet otherwise. Usage: classify.py MONITOR_LOG (copied into results/)."""
import datetime as dt, glob, os, re, shutil, sys
RES = os.environ.get("RES", os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))


def label_of(name):  # the same mapping as summarize.py's
    n = re.sub(r"\.(serve\.)?json$|\.txt$", "", name)
    for pat, lab in ((r"cap-(.+)-(run\d+)$", "capacity-{}-{}"), (r"engine-bundled-after-batch-(.+)$", "batch-bundled-{}"),
                     (r"attn-(?:4096|16)-(.+)$", "attn-{}"), (r"(?:wrk-health|itl-c1|itl-c256)-(run\d+)-\d+$", "frontend-{}")):
        m = re.match(pat, n)
        if m:
            return lab.format(*m.groups())
    return n



def ts(s):
    return dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc).timestamp()


mon = []
for line in open(sys.argv[1]):
    w = line.split(None, 1)
    if len(w) == 2:
        mon.append((ts(w[0]), w[1].strip()))
ends = {}
for f in glob.glob(os.path.join(RES, "*")) + glob.glob(os.path.join(RES, "profile", "*")):
    lab = label_of(os.path.basename(f))
    ends[lab] = max(ends.get(lab, 0), os.path.getmtime(f))
out = []
for line in open(os.path.join(RES, "load.log")):
    w = line.split()
    if len(w) > 2 and w[1] in ends and " during:" not in line:  # classified runs stay as they are
        t0, t1 = ts(w[0]), ends[w[1]]
        inside = [b for t, b in mon if t0 <= t <= t1]
        seen = sorted({b for b in inside if b != "none"})
        frac = sum(b != "none" for b in inside) / len(inside) if inside else 0
        if inside:  # BUSY: another process was busy in more than 10% of the samples
            w[2] = "BUSY" if frac > 0.1 else "quiet"
            seen = [f"{frac:.0%} of samples"] + seen
            line = " ".join(w[:3]) + " " + re.sub(r"^\S+ \S+ \S+ ", "", line.rstrip("\n"))
            line = re.sub(r" during:.*", "", line.rstrip("\n")) + (f" during: {' | '.join(seen)[:300]}" if seen else " during: none") + "\n"
    out.append(line)
open(os.path.join(RES, "load.log"), "w").writelines(out)
shutil.copy(sys.argv[1], os.path.join(RES, "monitor.log"))
