#!/usr/bin/python3
"""test_kubernetes.py: renders deploy/kubernetes with `kubectl kustomize` (the
machine's kubectl, or Debian's kubernetes-client) and checks what issue 6
asks of it: readiness on /health and a liveness probe, a preStop pause and
terminationGracePeriodSeconds >= preStop + --shutdown-timeout, resource
requests and limits, a non-root pod, a Service on the container port, an
autoscaling/v2 HPA on the per-pod waiting-requests metric that the
prometheus-adapter rule in the repo produces, scrape annotations, and the
ServiceMonitor component. Skips (77) without kubectl.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from deploy_common import DEPLOY, fail, load_yaml, skip  # noqa: E402

import yaml  # noqa: E402  (python3-yaml; load_yaml above skips cleanly without it)

K8S = os.path.join(DEPLOY, "kubernetes")
kubectl = shutil.which("kubectl")
if not kubectl:
    skip("kubectl not found (apt-get install kubernetes-client, or the cloud SDK's kubectl)")

errors = []


def check(cond, msg):
    if not cond:
        errors.append(msg)
        print("  not ok:", msg)


def render(path):
    r = subprocess.run([kubectl, "kustomize", path], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        fail("kubectl kustomize %s:\n%s" % (path, r.stderr))
    return [d for d in yaml.safe_load_all(r.stdout) if d]


# The objects are in base/, which deploy/kubernetes/kustomization.yaml takes
# in as a directory resource (kustomize >= 2.1). kubectl < 1.24 does not
# print its kustomize version, and Debian's kubernetes-client 1.20 carries
# kustomize v2.0 (files only): there render base/ itself, the same objects.
ver = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True).stdout
m = re.search(r"Kustomize Version: v(\d+)\.(\d+)", ver)
if m:
    docs = render(K8S)
else:
    print("kubectl prints no kustomize version (old): rendering deploy/kubernetes/base")
    docs = render(os.path.join(K8S, "base"))
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)
print("rendered:", ", ".join("%s/%s" % (d["kind"], d["metadata"]["name"]) for d in docs))
check(set(by_kind) >= {"Deployment", "Service", "HorizontalPodAutoscaler"}, "Deployment, Service, HPA")

dep = by_kind["Deployment"][0]
pod = dep["spec"]["template"]
spec = pod["spec"]
(c,) = [c for c in spec["containers"] if c["name"] == "mfaserve"]
env = {e["name"]: e.get("value") for e in c.get("env", [])}
ports = {p["name"]: p["containerPort"] for p in c["ports"]}
port = int(env.get("MFASERVE_PORT", "8000"))
check(ports.get("http") == port, "container port http = MFASERVE_PORT")
check(env.get("MFASERVE_HOST") == "0.0.0.0", "MFASERVE_HOST=0.0.0.0")
check("/" in c["image"] and not c["image"].startswith("mfaserve"), "kustomize images: replaced the image name")

rp = c.get("readinessProbe", {})
check(rp.get("httpGet", {}).get("path") == "/health", "readinessProbe GET /health")
check("livenessProbe" in c, "livenessProbe")
lp = c.get("livenessProbe", {})
check(lp.get("periodSeconds", 10) * lp.get("failureThreshold", 3) >= 30, "liveness tolerates >= 30 s of a busy server")
check("startupProbe" in c or lp.get("initialDelaySeconds", 0) >= 30, "startupProbe (or a liveness delay) covers loading")

pre = c.get("lifecycle", {}).get("preStop", {})
cmd = pre.get("exec", {}).get("command", [])
pre_s = int(cmd[-1]) if cmd and cmd[0].endswith("sleep") else int(pre.get("sleep", {}).get("seconds", 0))
check(pre_s > 0, "preStop pause")
st = int(env.get("MFASERVE_SHUTDOWN_TIMEOUT", "0"))
check(st > 0, "MFASERVE_SHUTDOWN_TIMEOUT set")
tg = spec.get("terminationGracePeriodSeconds", 30)
check(tg >= pre_s + st + 5, "terminationGracePeriodSeconds %d >= preStop %d + shutdown %d + margin" % (tg, pre_s, st))
check(tg <= pre_s + st + 60, "terminationGracePeriodSeconds not far beyond the shutdown timeout")

res = c.get("resources", {})
for k in ("requests", "limits"):
    check({"cpu", "memory"} <= set(res.get(k, {})), "resources.%s cpu and memory" % k)
thr = env.get("MFASERVE_THREADS")
check(thr is not None and str(res.get("requests", {}).get("cpu")) == thr, "cpu request = MFASERVE_THREADS")
mem = res.get("requests", {}).get("memory", "0")
mem_mi = int(mem[:-2]) * (1024 if mem.endswith("Gi") else 1) if mem[-2:] in ("Mi", "Gi") else 0
kv = env.get("MFASERVE_KV_CACHE_MEMORY", "0")
kv_mi = int(kv[:-1]) * 1024 if kv.endswith("G") else int(kv[:-1]) if kv.endswith("M") else 0
check(kv_mi > 0 and mem_mi > kv_mi, "memory request (%s) exceeds the KV pool (%s)" % (mem, kv))
# When the bundled model is there, the request must hold its weights (mmap'd,
# counted by the cgroup) + the KV pool + 128 MiB of working memory.
mdir = os.path.join(os.path.dirname(DEPLOY), "models", "default")
if os.path.isdir(mdir):
    wbytes = sum(os.path.getsize(os.path.join(mdir, f)) for f in os.listdir(mdir) if f.endswith(".safetensors"))
    need = wbytes / 2**20 + kv_mi + 128
    print("bundled model: %.0f MiB of weights; KV %d MiB; request %s (need >= %.0f MiB)" % (wbytes / 2**20, kv_mi, mem, need))
    check(mem_mi >= need, "memory request %s holds the bundled model (%.0f MiB) + KV pool + 128 MiB" % (mem, wbytes / 2**20))
sc = spec.get("securityContext", {})
check(sc.get("runAsNonRoot") is True and sc.get("runAsUser", 0) != 0, "pod runs as non-root")

ann = pod["metadata"].get("annotations", {})
check(ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/path") == "/metrics"
      and ann.get("prometheus.io/port") == str(port), "prometheus.io scrape annotations")

svc = by_kind["Service"][0]
check(svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items(), "Service selects the pods")
check(any(p.get("targetPort") in ("http", port) for p in svc["spec"]["ports"]), "Service targets the http port")

pdb = by_kind.get("PodDisruptionBudget", [{}])[0]
check(pdb.get("spec", {}).get("selector", {}).get("matchLabels", {}).items() <= pod["metadata"]["labels"].items()
      and pdb.get("spec", {}).get("maxUnavailable") == 1, "PodDisruptionBudget: one pod at a time")

hpa = by_kind["HorizontalPodAutoscaler"][0]
check(hpa["apiVersion"] == "autoscaling/v2", "HPA autoscaling/v2")
check(hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"], "HPA targets the Deployment")
pods_metrics = [m for m in hpa["spec"].get("metrics", []) if m["type"] == "Pods"]
check(pods_metrics, "HPA has a Pods metric")
check("replicas" not in dep["spec"], "Deployment leaves replicas to the HPA")
if pods_metrics:
    name = pods_metrics[0]["pods"]["metric"]["name"]
    check(pods_metrics[0]["pods"]["target"]["type"] == "AverageValue", "Pods metric target AverageValue")
    (values,) = load_yaml(os.path.join(K8S, "prometheus-adapter", "values.yaml"))
    rules = {r["name"]["as"]: r for r in values["rules"]["custom"]}
    check(name in rules, "prometheus-adapter rule produces %s" % name)
    if name in rules:
        r = rules[name]
        check("mfaserve:num_requests_waiting" in r["seriesQuery"], "%s comes from mfaserve:num_requests_waiting" % name)
        check(r["resources"]["overrides"].get("pod", {}).get("resource") == "pod", "adapter maps the pod label")

# The ServiceMonitor component, rendered on top of the base from a temp dir
# (components need kustomize >= 3.7; kubectl < 1.24 does not print its version).
if not m or (int(m.group(1)), int(m.group(2))) < (3, 7):
    print("kustomize too old for components (%s): ServiceMonitor component not rendered" % (m and m.group(0)))
else:
    tmp = tempfile.mkdtemp(prefix="mfs-kustomize-")
    try:
        rel = os.path.relpath(K8S, tmp)
        with open(os.path.join(tmp, "kustomization.yaml"), "w") as f:
            f.write("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
                    "resources:\n  - %s\ncomponents:\n  - %s/components/servicemonitor\n" % (rel, rel))
        sm = [d for d in render(tmp) if d["kind"] == "ServiceMonitor"]
    finally:
        shutil.rmtree(tmp)
    check(len(sm) == 1, "components/servicemonitor adds a ServiceMonitor")
    if sm:
        ep = sm[0]["spec"]["endpoints"][0]
        check(ep.get("path") == "/metrics" and ep.get("port") == "http", "ServiceMonitor scrapes http /metrics")
        check(sm[0]["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items(),
              "ServiceMonitor selects the Service")

if errors:
    fail("%d check(s) failed" % len(errors))
print("PASS")
