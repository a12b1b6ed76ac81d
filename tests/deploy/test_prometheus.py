#!/usr/bin/python3
"""test_prometheus.py: the monitoring stack without containers. Runs a real
`mfaserve serve` (random MFA-KR model) and Debian's `prometheus` with
deploy/prometheus/prometheus.yml (the target pointed at the test server, a 1 s
scrape) and its alert rules, puts load on the server, then evaluates every
Grafana dashboard query through Prometheus' HTTP API the way Grafana would
($__rate_interval, $instance expanded) and checks that each one evaluates,
that the ones that must have data do (KV usage, blocks, running, throughput,
TTFT / inter-token percentiles, prefix-cache hit rate), and that the alert
rules load healthy.

  test_prometheus.py --bin build/mfaserve
Skips (77) without `prometheus` (apt-get install prometheus) or `serve`.
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(__file__))
from deploy_common import DEPLOY, REPO, Server, dashboard_exprs, fail, free_port, has_serve, http, load_yaml, skip  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default=os.path.join(REPO, "build", "mfaserve"))
args = ap.parse_args()
prom_bin = shutil.which("prometheus")
if not prom_bin:
    skip("prometheus not installed (apt-get install prometheus)")
if not has_serve(args.bin):
    skip("%s has no `serve` command yet" % args.bin)

import yaml  # noqa: E402

# Queries that must return at least one finite sample under load.
MUST_HAVE_DATA = ["KV-cache usage", "KV blocks", "Requests running / waiting", "Token throughput",
                  "Time to first token", "Inter-token latency", "Prefix-cache hit rate", "Generation tokens/s"]
errors = []


def check(cond, msg):
    if not cond:
        errors.append(msg)
        print("  not ok:", msg)


def finite_values(result):
    out = []
    for r in result:
        v = r.get("value", [0, "NaN"])[1]
        try:
            f = float(v)
        except ValueError:
            continue
        if math.isfinite(f):
            out.append(f)
    return out


with Server(args.bin, extra=["--kv-cache-memory", "4M"]) as srv:
    tmp = srv.tmp
    target = "127.0.0.1:%d" % srv.port
    (cfg,) = load_yaml(os.path.join(DEPLOY, "prometheus", "prometheus.yml"))
    cfg["global"]["evaluation_interval"] = "1s"
    for job in cfg["scrape_configs"]:
        job["scrape_interval"] = "1s"
        job["static_configs"] = [{"targets": [target]}]
    cfg["rule_files"] = [os.path.join(DEPLOY, "prometheus", r) for r in cfg.get("rule_files", [])]
    with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
        yaml.safe_dump(cfg, f)
    pport = free_port()
    plog = open(os.path.join(tmp, "prometheus.log"), "w")
    prom = subprocess.Popen([prom_bin, "--config.file=" + os.path.join(tmp, "prometheus.yml"),
                             "--storage.tsdb.path=" + os.path.join(tmp, "tsdb"),
                             "--web.listen-address=127.0.0.1:%d" % pport], stdout=plog, stderr=subprocess.STDOUT)
    papi = "http://127.0.0.1:%d/api/v1/" % pport
    try:
        deadline = time.time() + 30
        while True:
            try:
                if http("GET", "http://127.0.0.1:%d/-/ready" % pport, timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if prom.poll() is not None or time.time() > deadline:
                plog.flush()
                print(open(os.path.join(tmp, "prometheus.log")).read()[-3000:])
                fail("prometheus did not start")
            time.sleep(0.2)

        # Prometheus applies new targets on a 5 s tick: wait for the first scrape.
        deadline = time.time() + 30
        while True:
            active = json.loads(http("GET", papi + "targets")[1])["data"]["activeTargets"]
            if active and active[0]["health"] == "up":
                break
            if time.time() > deadline:
                fail("Prometheus never scraped the server: %s" % active)
            time.sleep(0.25)

        # Load for ~8 s: 4 clients, a shared 32-token prefix, short outputs
        # (so first tokens, finished requests and prefix hits keep coming).
        stop = time.time() + 8
        model = json.loads(srv.get("/v1/models")[1])["data"][0]["id"]

        def client(k):
            i = 0
            while time.time() < stop:
                srv.post("/v1/completions", {"model": model, "prompt": list(range(10, 42)) + [100 + k, 150 + i % 50],
                                             "max_tokens": 30, "ignore_eos": True, "temperature": 0.7, "seed": i})
                i += 1

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        time.sleep(6)  # query while the load runs: the gauges are non-zero now
        st, body = http("GET", papi + "targets")
        active = json.loads(body)["data"]["activeTargets"]
        check(active and active[0]["health"] == "up", "Prometheus scrapes the server: %s" %
              [(t["scrapeUrl"], t["health"], t.get("lastError")) for t in active])

        st, body = http("GET", papi + "query?" + urllib.parse.urlencode({"query": "count_over_time(up[10s])"}))
        print("  scrapes in the last 10 s:", [r["value"][1] for r in json.loads(body)["data"]["result"]],
              "last:", [(t["lastScrape"], t["lastScrapeDuration"]) for t in active])
        _, exprs = dashboard_exprs()
        results = {}
        for title, expr in exprs:
            if title.startswith("$"):
                continue
            q = expr.replace("$__rate_interval", "4s").replace("$__interval", "1s").replace("$instance", ".*")
            st, body = http("GET", papi + "query?" + urllib.parse.urlencode({"query": q}))
            r = json.loads(body)
            check(st == 200 and r.get("status") == "success", "%s: %s -> %s" % (title, q, body[:200]))
            vals = finite_values(r.get("data", {}).get("result", []))
            results.setdefault(title, []).extend(vals)
        for title in MUST_HAVE_DATA:
            check(results.get(title), "dashboard panel %r has data under load" % title)
        for title in sorted(results):
            print("  %-36s %s" % (title, ", ".join("%.3g" % v for v in results[title][:4]) or "(no data)"))

        st, body = http("GET", papi + "rules")
        groups = json.loads(body)["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        check(len(rules) >= 5, "alert rules loaded (%d)" % len(rules))
        bad = [(r["name"], r.get("lastError")) for r in rules if r.get("health") not in ("ok", "unknown")]
        check(not bad, "alert rules evaluate: %s" % bad)
        for t in threads:
            t.join()
    finally:
        prom.terminate()
        prom.wait(20)
        plog.close()

if errors:
    fail("%d check(s) failed" % len(errors))
print("PASS")
