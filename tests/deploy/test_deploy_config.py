#!/usr/bin/python3
"""test_deploy_config.py: static checks of deploy/ that need no server:

- deploy/Dockerfile: both stages FROM debian:bookworm-slim, plain syntax (no
  BuildKit-only features), non-root numeric USER, HEALTHCHECK, exec-form
  ENTRYPOINT, 0.0.0.0:8000, the bundled model; every pkg-config module the
  CMake build asks for has its -dev package in the build stage and its shared
  library in the runtime stage (so a new dependency cannot silently break the
  image); .dockerignore keeps build dirs and node_modules out.
- deploy/compose.yaml parses (python3-yaml) and wires mfaserve, Prometheus and
  Grafana to files that exist.
- promtool check config / check rules on deploy/prometheus (Debian's
  `prometheus` package ships promtool).
- the Grafana provisioning files and dashboard JSON: the data source uid the
  dashboard uses, and a panel for each thing issue 6 lists.
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from deploy_common import DEPLOY, REPO, dashboard_exprs, fail, load_yaml  # noqa: E402

errors = []


def check(cond, msg):
    if not cond:
        errors.append(msg)
        print("  not ok:", msg)


# ---------------------------------------------------------------- Dockerfile
# pkg-config module -> (Debian -dev package for the build stage, runtime package)
PKG_MAP = {
    "openblas": ("libopenblas-dev", "libopenblas0-pthread"),
    "libcjson": ("libcjson-dev", "libcjson1"),
    "libpcre2-8": ("libpcre2-dev", "libpcre2-8-0"),
    "libutf8proc": ("libutf8proc-dev", "libutf8proc2"),
    "libmicrohttpd": ("libmicrohttpd-dev", "libmicrohttpd12"),
    "libuv": ("libuv1-dev", "libuv1"),
    "zlib": ("zlib1g-dev", "zlib1g"),
    "libcurl": ("libcurl4-openssl-dev", "libcurl4"),
    "libzmq": ("libzmq3-dev", "libzmq5"),
    "msgpack": ("libmsgpack-dev", "libmsgpackc2"),
}


def dockerfile():
    print("deploy/Dockerfile")
    text = open(os.path.join(DEPLOY, "Dockerfile")).read()
    logical = re.sub(r"\\\n", " ", text)  # join continuation lines
    lines = [ln.strip() for ln in logical.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    stages, cur = [], None
    for ln in lines:
        word = ln.split()[0].upper()
        if word == "FROM":
            cur = {"from": ln.split()[1], "lines": []}
            stages.append(cur)
        elif cur is not None:
            cur["lines"].append(ln)
    check(len(stages) >= 2, "multi-stage (build + runtime)")
    check(all(s["from"] == "debian:bookworm-slim" for s in stages), "every stage FROM debian:bookworm-slim")
    check(not re.search(r"^#\s*syntax\s*=", text, re.M), "no # syntax= directive (plain Dockerfile)")
    check("--mount" not in logical and not re.search(r"<<-?\s*['\"]?[A-Z]+", logical),
          "no BuildKit-only RUN --mount or heredocs (the classic builder must accept it)")
    build, rt = stages[0], stages[-1]
    rt_text = "\n".join(rt["lines"])
    build_text = "\n".join(build["lines"])
    user = [ln.split()[1] for ln in rt["lines"] if ln.upper().startswith("USER ")]
    check(user and re.match(r"^[1-9][0-9]*(:[0-9]+)?$", user[-1]), "runtime USER is a non-root numeric uid")
    check(any(ln.upper().startswith("HEALTHCHECK") and "CMD" in ln for ln in rt["lines"]), "HEALTHCHECK ... CMD")
    ep = [ln for ln in rt["lines"] if ln.upper().startswith(("ENTRYPOINT", "CMD "))]
    check(ep and all(re.match(r"^(ENTRYPOINT|CMD)\s*\[", ln, re.I) for ep_ln in ep for ln in [ep_ln]),
          "ENTRYPOINT/CMD in exec form (the server is PID 1 and gets SIGTERM)")
    check(any("mfaserve" in ln and "serve" in ln for ln in ep), "ENTRYPOINT runs `mfaserve serve`")
    check(re.search(r"MFASERVE_HOST=0\.0\.0\.0", rt_text), "MFASERVE_HOST=0.0.0.0 in the runtime stage")
    check(re.search(r"^EXPOSE 8000\b", rt_text, re.M), "EXPOSE 8000")
    check(re.search(r"^COPY models/", rt_text, re.M), "COPY models/ (the bundled model)")
    check(re.search(r"MFASERVE_MODEL=\S*models/default", rt_text), "MFASERVE_MODEL points at the bundled models/default")
    check(re.search(r"^STOPSIGNAL SIGTERM", rt_text, re.M), "STOPSIGNAL SIGTERM")
    check("-dev" not in rt_text, "no -dev packages in the runtime stage")
    hc = os.path.join(DEPLOY, "healthcheck.sh")
    check(os.access(hc, os.X_OK), "deploy/healthcheck.sh is executable")

    # every pkg-config module the build uses -> packages in both stages
    mods = set()
    for cm in glob.glob(os.path.join(REPO, "**", "CMakeLists.txt"), recursive=True):
        rel = os.path.relpath(cm, REPO)
        if rel.startswith(("build", "tests", "tools", ".")) or "node_modules" in rel:
            continue
        for m in re.finditer(r"pkg_check_modules\(\s*\w+\s+(?:REQUIRED\s+)?(?:IMPORTED_TARGET\s+)?([^)]*)\)",
                             open(cm).read()):
            for tok in m.group(1).split():
                if tok.isupper():
                    continue
                mods.add(re.split(r"[<>=]", tok)[0])
    print("  pkg-config modules in the build:", " ".join(sorted(mods)))
    for mod in sorted(mods):
        if mod not in PKG_MAP:
            check(False, "pkg-config module %s: add its packages to deploy/Dockerfile and to PKG_MAP here" % mod)
            continue
        dev, lib = PKG_MAP[mod]
        check(re.search(r"\b%s\b" % re.escape(dev), build_text), "build stage installs %s (for %s)" % (dev, mod))
        check(re.search(r"\b%s\b" % re.escape(lib), rt_text), "runtime stage installs %s (for %s)" % (lib, mod))
    # and every top-level module folder the build adds is copied into the build stage
    top = open(os.path.join(REPO, "CMakeLists.txt")).read()
    for sub in re.findall(r"add_subdirectory\((\w+)\)", top):
        if sub == "tests":
            continue
        check(re.search(r"^COPY %s\b" % sub, build_text, re.M), "build stage copies %s/" % sub)

    di = os.path.join(REPO, ".dockerignore")
    check(os.path.exists(di), ".dockerignore exists")
    if os.path.exists(di):
        pats = [ln.strip() for ln in open(di) if ln.strip() and not ln.startswith("#")]
        for p in ("build", "build-*", "**/node_modules", ".corpus", ".git"):
            check(p in pats, ".dockerignore has %s" % p)


# ---------------------------------------------------------------- compose
def compose():
    print("deploy/compose.yaml")
    (doc,) = load_yaml(os.path.join(DEPLOY, "compose.yaml"))
    svcs = doc.get("services", {})
    check(set(svcs) >= {"mfaserve", "prometheus", "grafana"}, "services mfaserve, prometheus, grafana")
    m = svcs.get("mfaserve", {})
    b = m.get("build", {})
    check(os.path.exists(os.path.join(DEPLOY, b.get("context", "."), b.get("dockerfile", "Dockerfile"))),
          "mfaserve builds deploy/Dockerfile from the repo root")
    check(any(str(p).endswith(":8000") for p in m.get("ports", [])), "mfaserve publishes 8000")
    sgp = str(m.get("stop_grace_period", ""))
    st = int(m.get("environment", {}).get("MFASERVE_SHUTDOWN_TIMEOUT", "30"))
    check(sgp.endswith("s") and int(sgp[:-1]) > st, "stop_grace_period > MFASERVE_SHUTDOWN_TIMEOUT")
    for name in ("prometheus", "grafana"):
        for v in svcs.get(name, {}).get("volumes", []):
            src = v.split(":")[0]
            if src.startswith("."):
                check(os.path.exists(os.path.join(DEPLOY, src)), "%s volume %s exists" % (name, src))
    cmd = " ".join(svcs.get("prometheus", {}).get("command", []))
    check("/etc/prometheus/prometheus.yml" in cmd, "prometheus runs deploy/prometheus/prometheus.yml")
    check(any("provisioning" in v for v in svcs.get("grafana", {}).get("volumes", [])), "grafana mounts provisioning")


# ---------------------------------------------------------------- prometheus
def promtool():
    print("deploy/prometheus (promtool)")
    pt = shutil.which("promtool")
    if not pt:
        check(False, "promtool not found (apt-get install prometheus)")
        return
    for args in (["check", "config", "prometheus/prometheus.yml"], ["check", "rules", "prometheus/rules.yml"]):
        r = subprocess.run([pt] + args, cwd=DEPLOY, capture_output=True, text=True)
        print("  promtool", " ".join(args), "->", r.returncode)
        check(r.returncode == 0, "promtool %s:\n%s%s" % (" ".join(args), r.stdout, r.stderr))
    # Debian builds Prometheus without Kubernetes service discovery, so the
    # Kubernetes scrape config is checked by promtool only where it can be.
    r = subprocess.run([pt, "check", "config", "prometheus/prometheus-kubernetes.yml"], cwd=DEPLOY,
                       capture_output=True, text=True)
    if r.returncode != 0 and "kubernetes_sd_configs not found" in r.stdout + r.stderr:
        print("  prometheus-kubernetes.yml: this promtool lacks kubernetes_sd; checking YAML only")
        (doc,) = load_yaml(os.path.join(DEPLOY, "prometheus", "prometheus-kubernetes.yml"))
        job = doc["scrape_configs"][0]
        labels = {r.get("target_label") for r in job["relabel_configs"]}
        check({"namespace", "pod"} <= labels, "kubernetes scrape job sets namespace and pod labels")
    else:
        check(r.returncode == 0, "promtool check config prometheus-kubernetes.yml:\n%s%s" % (r.stdout, r.stderr))


# ---------------------------------------------------------------- grafana
WANT_PANELS = {  # what issue 6 asks the dashboard to show -> a metric its queries must use
    "KV-cache usage": "mfaserve:kv_cache_usage_perc",
    "blocks used": "mfaserve:kv_cache_used_blocks",
    "blocks cached": "mfaserve:kv_cache_cached_blocks",
    "prefix-cache hit rate": "mfaserve:prefix_cache_hits_total",
    "running": "mfaserve:num_requests_running",
    "waiting": "mfaserve:num_requests_waiting",
    "preemptions": "mfaserve:num_preemptions_total",
    "token throughput": "mfaserve:generation_tokens_total",
    "TTFT percentiles": "histogram_quantile(0.99, sum by (le) (rate(mfaserve:time_to_first_token_seconds_bucket",
    "inter-token latency percentiles": "histogram_quantile(0.99, sum by (le) (rate(mfaserve:inter_token_latency_seconds_bucket",
}


def grafana():
    print("deploy/grafana")
    (ds,) = load_yaml(os.path.join(DEPLOY, "grafana", "provisioning", "datasources", "prometheus.yaml"))
    uids = {d.get("uid") for d in ds["datasources"]}
    (prov,) = load_yaml(os.path.join(DEPLOY, "grafana", "provisioning", "dashboards", "mfaserve.yaml"))
    check(prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards", "dashboard provider path")
    dash, exprs = dashboard_exprs()
    check(dash.get("uid") and dash.get("title"), "dashboard has uid and title")
    dsvar = [v for v in dash["templating"]["list"] if v["type"] == "datasource"]
    check(dsvar and dsvar[0]["current"]["value"] in uids, "dashboard's default data source is the provisioned uid")
    ids = [p["id"] for p in dash["panels"]]
    check(len(ids) == len(set(ids)), "panel ids unique")
    alltext = "\n".join(e for _, e in exprs)
    for what, needle in WANT_PANELS.items():
        check(needle in alltext, "dashboard shows %s (%s)" % (what, needle))
    # PromQL syntax: every query as a recording rule through promtool check rules
    # (Grafana's variables replaced by what they expand to).
    pt = shutil.which("promtool")
    queries = [(t, e) for t, e in exprs if not t.startswith("$")]
    if pt:
        import tempfile
        rules = {"groups": [{"name": "dashboard", "rules": [
            {"record": "dashboard:q%d" % i, "expr": grafana_expand(e)} for i, (_, e) in enumerate(queries)]}]}
        with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
            json.dump(rules, f)  # JSON is YAML
        r = subprocess.run([pt, "check", "rules", f.name], capture_output=True, text=True)
        os.unlink(f.name)
        check(r.returncode == 0, "dashboard PromQL parses (promtool check rules):\n%s%s" % (r.stdout, r.stderr))
    print("  %d panels, %d queries, PromQL %s" % (len(dash["panels"]), len(exprs), "checked" if pt else "not checked"))


def grafana_expand(expr):
    return expr.replace("$__rate_interval", "1m").replace("$__interval", "15s").replace("$instance", ".*")


dockerfile()
compose()
promtool()
grafana()
if errors:
    fail("%d check(s) failed" % len(errors))
print("PASS")
