"""deploy_common.py: helpers shared by the deploy tests: the repo layout, the
metric names the deploy files query (dashboard, alert rules, prometheus-adapter
rules), and a real `mfaserve serve` on a free loopback port with a random model.

Run with /usr/bin/python3 (numpy for tools/make_model.py, yaml from python3-yaml).
Exit code 77 means skipped (CTest SKIP_RETURN_CODE).
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

REPO = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEPLOY = os.path.join(REPO, "deploy")
SKIP = 77

# mfaserve:<name>, optionally followed by a histogram/counter suffix.
METRIC_RE = re.compile(r"\bmfaserve:[A-Za-z_][A-Za-z0-9_:]*")
HIST_SUFFIXES = ("_bucket", "_sum", "_count")


def skip(msg):
    print("SKIP:", msg)
    sys.exit(SKIP)


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def load_yaml(path):
    try:
        import yaml
    except ImportError:
        skip("python3-yaml is not installed (apt-get install python3-yaml)")
    with open(path) as f:
        return list(yaml.safe_load_all(f))


def dashboard_exprs(path=None):
    """(panel title, expr) for every query in the Grafana dashboard JSON,
    plus templating queries."""
    path = path or os.path.join(DEPLOY, "grafana", "dashboards", "mfaserve.json")
    with open(path) as f:
        dash = json.load(f)
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((p.get("title", "?"), t["expr"]))
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if isinstance(q, str) and "mfaserve:" in q:
            out.append(("$" + v["name"], q))
    return dash, out


def deploy_exprs():
    """(where, expr) for every PromQL expression in the deploy files that
    names an mfaserve metric: dashboard, alert rules, adapter rules."""
    _, exprs = dashboard_exprs()
    out = [("dashboard: " + t, e) for t, e in exprs]
    for doc in load_yaml(os.path.join(DEPLOY, "prometheus", "rules.yml")):
        for g in doc.get("groups", []):
            for r in g.get("rules", []):
                out.append(("rules.yml: " + r.get("alert", r.get("record", "?")), r["expr"]))
    for doc in load_yaml(os.path.join(DEPLOY, "kubernetes", "prometheus-adapter", "values.yaml")):
        for r in doc.get("rules", {}).get("custom", []):
            out.append(("prometheus-adapter: " + r["name"]["as"], r["seriesQuery"]))
            out.append(("prometheus-adapter: " + r["name"]["as"], r["name"]["matches"].strip("^$")))
    return out


def metric_names(expr):
    return set(METRIC_RE.findall(expr))


def parse_exposition(text):
    """Prometheus text -> ({family: type}, {sample name: [label strings]})."""
    types, samples = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(None, 3)
            types[name] = typ.strip()
        elif line and not line.startswith("#"):
            m = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s", line)
            if m:
                samples.setdefault(m.group(1), []).append(m.group(2) or "")
    return types, samples


def exported(name, types, samples):
    """True when the server exports the series `name` (a family, or a
    histogram's _bucket/_sum/_count, or a counter's sample)."""
    if name in samples or name in types:
        return True
    for suf in HIST_SUFFIXES:
        if name.endswith(suf) and types.get(name[: -len(suf)]) in ("histogram", "summary"):
            return True
    return False


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def has_serve(binary):
    if not os.path.exists(binary):
        return False
    r = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True)
    return r.returncode == 0


def http(method, url, body=None, timeout=30, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def make_random_model(out, hidden=64, layers=2, vocab=300):
    """A random MFA-KR checkpoint (tools/make_model.py) with the server tests'
    tiny byte-level BPE tokenizer (tests/server/make_tokenizer.py, 300 ids)."""
    subprocess.run(["/usr/bin/python3", os.path.join(REPO, "tools", "make_model.py"), "--attention", "mfa-kr",
                    "--dtype", "bf16", "--hidden-size", str(hidden), "--layers", str(layers), "--heads", "4",
                    "--head-dim", "16", "--vocab", str(vocab), "--out", out], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["/usr/bin/python3", os.path.join(REPO, "tests", "server", "make_tokenizer.py"), out],
                   check=True, stdout=subprocess.DEVNULL)


class Server:
    """`mfaserve serve` with a random MFA-KR model (tools/make_model.py) on a
    free loopback port; the server's log goes to <tmp>/server.log."""

    def __init__(self, binary, extra=(), model=None, hidden=64, layers=2, vocab=300):
        self.binary = binary
        self.tmp = tempfile.mkdtemp(prefix="mfs-deploy-")
        self.model = model
        if self.model is None:
            self.model = os.path.join(self.tmp, "mfa-kr-random")
            make_random_model(self.model, hidden, layers, vocab)
        self.port = free_port()
        self.base = "http://127.0.0.1:%d" % self.port
        self.log_path = os.path.join(self.tmp, "server.log")
        self.log = open(self.log_path, "w")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MFASERVE_")}
        self.proc = subprocess.Popen([binary, "serve", "--model", self.model, "--host", "127.0.0.1",
                                      "--port", str(self.port)] + list(extra),
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 60
        while True:
            if self.proc.poll() is not None:
                self.dump()
                fail("server exited with %d before it was healthy" % self.proc.returncode)
            try:
                if http("GET", self.base + "/health", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                self.dump()
                self.stop()
                fail("server not healthy within 60 s")
            time.sleep(0.1)

    def dump(self):
        self.log.flush()
        with open(self.log_path) as f:
            print("---- server log ----\n" + f.read()[-4000:])

    def get(self, path, **kw):
        return http("GET", self.base + path, **kw)

    def post(self, path, body, **kw):
        return http("POST", self.base + path, body, **kw)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.log.closed:
            self.log.close()
        return self.proc.returncode

    def cleanup(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        if exc[0] is None:  # keep the logs of a failed run
            self.cleanup()
