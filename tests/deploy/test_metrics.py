#!/usr/bin/python3
"""test_metrics.py: the deploy files' queries against what the server really
exports. Starts `mfaserve serve` with a random MFA-KR model on a free
loopback port, sends a few completions (so histograms, the finished_reason
label and prefix-cache hits have data), scrapes /metrics and checks:

- `promtool check metrics` accepts the output (its one lint that every
  vLLM-style name trips, "metric names should not contain ':'", is allowed:
  the colon prefix is the project's choice, as vLLM's `vllm:` is);
- every mfaserve:* series named in the Grafana dashboard, the alert rules and
  the prometheus-adapter rules is exported (histograms through
  _bucket/_sum/_count), and every metric issue 5 lists is there with its type;
- GET /v1/cache/stats has every field the cache page (server/ui/index.html)
  reads, block_states is one char per block, and GET / serves that page.

  test_metrics.py --bin build/mfaserve
Skips (77) while the binary has no `serve` command.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from deploy_common import REPO, Server, deploy_exprs, exported, fail, has_serve, metric_names, parse_exposition, skip  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default=os.path.join(REPO, "build", "mfaserve"))
args = ap.parse_args()
if not has_serve(args.bin):
    skip("%s has no `serve` command yet" % args.bin)

EXPECTED = {  # issue 5's list: name -> type
    "mfaserve:num_requests_running": "gauge",
    "mfaserve:num_requests_waiting": "gauge",
    "mfaserve:kv_cache_usage_perc": "gauge",
    "mfaserve:kv_cache_num_blocks": "gauge",
    "mfaserve:kv_cache_used_blocks": "gauge",
    "mfaserve:kv_cache_cached_blocks": "gauge",
    "mfaserve:kv_cache_bytes_per_token": "gauge",
    "mfaserve:prompt_tokens_total": "counter",
    "mfaserve:generation_tokens_total": "counter",
    "mfaserve:num_preemptions_total": "counter",
    "mfaserve:prefix_cache_queries_total": "counter",
    "mfaserve:prefix_cache_hits_total": "counter",
    "mfaserve:request_success_total": "counter",
    "mfaserve:time_to_first_token_seconds": "histogram",
    "mfaserve:inter_token_latency_seconds": "histogram",
    "mfaserve:e2e_request_latency_seconds": "histogram",
    "mfaserve:request_queue_time_seconds": "histogram",
    # issue 16: the KV-event publisher's counters (0 without --kv-events-endpoint)
    "mfaserve:kv_events_published_total": "counter",
    "mfaserve:kv_events_dropped_total": "counter",
}
UI_FIELDS = ["model", "attention", "block_size", "kv_bytes_per_token", "max_model_len", "blocks.total", "blocks.used",
             "blocks.cached", "blocks.free", "usage", "block_states", "sequences", "requests.running",
             "requests.waiting", "prefix_cache.queries", "prefix_cache.hits", "tokens.prompt_total",
             "tokens.generation_total", "preemptions", "time"]
errors = []


def check(cond, msg):
    if not cond:
        errors.append(msg)
        print("  not ok:", msg)


def counter_name(types, name):
    # A counter family may be declared with or without the _total suffix.
    return types.get(name) or types.get(name[: -len("_total")] if name.endswith("_total") else name + "_total")


with Server(args.bin, extra=["--block-size", "16", "--kv-cache-memory", "4M"]) as srv:
    st, body = srv.get("/v1/models")
    model = json.loads(body)["data"][0]["id"] if st == 200 else "x"
    prompt = list(range(1, 40))
    for i in range(3):  # the same 39-token prompt: its full blocks come from the cache the 2nd time
        st, body = srv.post("/v1/completions", {"model": model, "prompt": prompt, "max_tokens": 6,
                                                "temperature": 0, "ignore_eos": True})
        check(st == 200, "completion %d: HTTP %d %s" % (i, st, body[:200]))
    st, body = srv.get("/metrics")
    check(st == 200, "GET /metrics: HTTP %d" % st)
    text = body.decode()
    # The block map is a snapshot the scheduler refreshes when asked: a poll
    # returns the one the previous poll asked for. Poll twice while idle.
    srv.get("/v1/cache/stats")
    time.sleep(0.3)
    st, sbody = srv.get("/v1/cache/stats")
    check(st == 200, "GET /v1/cache/stats: HTTP %d" % st)
    stats = json.loads(sbody) if st == 200 else {}
    st, page = srv.get("/")
    with open(os.path.join(REPO, "server", "ui", "index.html"), "rb") as f:
        check(st == 200 and page == f.read(), "GET / serves server/ui/index.html (HTTP %d, %d bytes)" % (st, len(page)))
    rc = srv.stop()
    check(rc == 0, "server exit code %s after SIGTERM" % rc)

out_dir = os.path.join(os.getcwd(), "deploy-metrics")
os.makedirs(out_dir, exist_ok=True)
with open(os.path.join(out_dir, "metrics.txt"), "w") as f:
    f.write(text)
print("scraped %d lines (kept in %s/metrics.txt)" % (len(text.splitlines()), out_dir))

# promtool check metrics
pt = shutil.which("promtool")
if not pt:
    check(False, "promtool not found (apt-get install prometheus)")
else:
    r = subprocess.run([pt, "check", "metrics"], input=text, capture_output=True, text=True)
    problems = [ln for ln in (r.stdout + r.stderr).splitlines()
                if ln.strip() and not ln.endswith("metric names should not contain ':'")]
    print("promtool check metrics: rc %d, %d problem(s) besides the ':' lint" % (r.returncode, len(problems)))
    check(r.returncode in (0, 3) and not problems, "promtool check metrics:\n  " + "\n  ".join(problems))

types, samples = parse_exposition(text)
for name, typ in EXPECTED.items():
    got = counter_name(types, name) if typ == "counter" else types.get(name)
    check(got == typ, "%s exported as %s (got %s)" % (name, typ, got))
check(any("finished_reason=" in lbl for lbl in samples.get("mfaserve:request_success_total", [])),
      "request_success_total has the finished_reason label")

seen = set()
for where, expr in deploy_exprs():
    for name in metric_names(expr):
        seen.add(name)
        check(exported(name, types, samples), "%s queries %s, which the server does not export" % (where, name))
print("deploy files query %d mfaserve series; all exported" % len(seen) if not errors else "")

# /v1/cache/stats: what the page reads
for path in UI_FIELDS:
    cur = stats
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    check(cur is not None, "/v1/cache/stats has %s" % path)
if stats.get("blocks"):
    bs = stats.get("block_states", "")
    check(len(bs) == stats["blocks"]["total"], "block_states has one char per block (%d vs %d)" % (len(bs), stats["blocks"]["total"]))
    check(set(bs) <= set("0123456789"), "block_states uses digits only")
    counts = {"free": bs.count("0"), "cached": bs.count("1"), "used": sum(bs.count(c) for c in "23456789")}
    check(all(counts[k] == stats["blocks"][k] for k in counts),
          "block_states counts %s match blocks %s" % (counts, stats["blocks"]))
    check(stats["prefix_cache"]["hits"] > 0, "the repeated prompt hit the prefix cache")

if errors:
    fail("%d check(s) failed" % len(errors))
print("PASS")
