#!/usr/bin/python3
"""test_inference_pool.py: renders deploy/kubernetes/inference-pool with
`kubectl kustomize` and checks it as issue 16 asks:

- every custom object (InferencePool, InferenceObjective, Gateway, HTTPRoute)
  against the openAPIV3Schema of its kind's CRD in tests/deploy/crds/
  (README.md there names the upstream files and releases), with the API
  server's defaulting first and a validator for the OpenAPI v3 subset CRDs
  use, CEL rules included (the few the CRDs carry, each implemented here);
- built-in kinds (Deployment, Service, ServiceAccount, RBAC, ConfigMap, HPA,
  PDB) structurally: metadata, selectors against pod labels, ports that
  resolve, probes on declared ports, role references;
- the references between objects: the pool selects the mfaserve pods and
  nothing else, its target port is the server's container port (where
  /metrics is), its endpointPickerRef names the EPP Service and a port of it
  that reaches the EPP's gRPC port, the HTTPRoute's backend is the pool and
  its parent the Gateway, the InferenceObjective's poolRef is the pool, the
  EPP's RBAC lets it watch what it watches (pods, inferencepools,
  inferenceobjectives) in its namespace, its args name the pool, its
  --config-file is the mounted EndpointPickerConfig, its image is the
  release the CRDs come from, its metric flags name series mfaserve exports
  (read from server/srv_metrics.c), and the mfaserve Deployment runs with
  --metrics-compat vllm;
- then that the checks bite: a set of mutations of the rendered objects (a
  missing required field, a wrong selector, port, reference, RBAC rule, ...)
  must each be caught.

Skips (77) without kubectl or python3-yaml, or with a kubectl whose kustomize
cannot render the overlay (it needs kustomize >= 3: kubectl >= 1.21).
"""
import copy
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from deploy_common import DEPLOY, REPO, fail, load_yaml, skip  # noqa: E402

import yaml  # noqa: E402  (python3-yaml; load_yaml above skips cleanly without it)

OVERLAY = os.path.join(DEPLOY, "kubernetes", "inference-pool")
CRD_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crds")
EPP_RELEASE = "v1.0.0"  # the Inference Extension release of crds/inference-extension-v1.0.0.yaml
POOL_GROUP = "inference.networking.k8s.io"
OBJECTIVE_GROUP = "inference.networking.x-k8s.io"

# The EPP's command-line flags of the v1.0 line (cmd/epp/runner/runner.go as
# of the InferencePool v1 API, plus controller-runtime's --zap-* flags; flags
# added later, e.g. --cache-info-metric, are left out): an unknown flag makes
# the EPP exit at start-up.
EPP_FLAGS = {
    "grpc-port", "grpc-health-port", "metrics-port", "enable-pprof", "pool-name", "pool-group",
    "pool-namespace", "v", "secure-serving", "health-checking", "cert-path",
    "total-queued-requests-metric", "kv-cache-usage-percentage-metric", "lora-info-metric",
    "refresh-metrics-interval", "refresh-prometheus-metrics-interval", "metrics-staleness-threshold",
    "config-file", "config-text", "model-server-metrics-port", "model-server-metrics-path",
    "model-server-metrics-scheme", "model-server-metrics-https-insecure-skip-verify",
    "ha-enable-leader-election", "zap-encoder", "zap-log-level", "zap-devel", "zap-stacktrace-level",
    "zap-time-encoding",
}
EPP_FLAG_DEFAULTS = {"grpc-port": "9002", "grpc-health-port": "9003", "pool-group": POOL_GROUP,
                     "total-queued-requests-metric": "vllm:num_requests_waiting",
                     "kv-cache-usage-percentage-metric": "vllm:gpu_cache_usage_perc",
                     "lora-info-metric": "vllm:lora_requests_info"}
# In-tree plugin types of the v1.0.0 EPP (runner.go registerInTreePlugins).
EPP_PLUGINS = {"prefix-cache-scorer", "max-score-picker", "random-picker", "weighted-random-picker",
               "single-profile-handler", "kv-cache-utilization-scorer", "queue-scorer", "lora-affinity-scorer"}
# The series the issue names as the ones the EPP reads from each pod.
EPP_READS = ["vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc",
             "vllm:lora_requests_info", "vllm:cache_config_info"]

# ---------------------------------------------------------------- validator
# The OpenAPI v3 keywords CRD schemas use. A keyword outside this set is an
# error: the validator must not pass a constraint it does not understand.
SCHEMA_KEYS = {
    "type", "properties", "additionalProperties", "required", "items", "enum", "pattern", "minLength",
    "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems",
    "minProperties", "maxProperties", "format", "default", "description", "nullable",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-map-type",
    "x-kubernetes-validations", "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string",
}


def _cel_key(rule):
    return " ".join(rule.split())


# The CEL rules (x-kubernetes-validations) of the CRDs in crds/, as Python
# predicates on the defaulted object. A rule not listed is an error.
CEL = {
    _cel_key("self.kind != 'Service' || has(self.port)"):
        lambda o: o.get("kind") != "Service" or "port" in o,
    _cel_key("(size(self.group) == 0 && self.kind == 'Service') ? has(self.port) : true"):
        lambda o: not (len(o.get("group", "")) == 0 and o.get("kind") == "Service") or "port" in o,
}

DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
INT_RANGE = {"int32": (-2**31, 2**31 - 1), "int64": (-2**63, 2**63 - 1)}


def apply_defaults(schema, value):
    """What the API server does before validating: fill absent properties
    that have a default, recursively (into the defaults too)."""
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for k, sub in props.items():
            if k not in value and "default" in sub:
                value[k] = copy.deepcopy(sub["default"])
            if k in value:
                apply_defaults(sub, value[k])
        ap = schema.get("additionalProperties")
        if isinstance(ap, dict):
            for k in value:
                if k not in props:
                    apply_defaults(ap, value[k])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for v in value:
            apply_defaults(schema["items"], v)


def _type_ok(t, v):
    return {"object": isinstance(v, dict), "array": isinstance(v, list), "string": isinstance(v, str),
            "boolean": isinstance(v, bool),
            "integer": isinstance(v, int) and not isinstance(v, bool),
            "number": isinstance(v, (int, float)) and not isinstance(v, bool)}.get(t, False)


def validate(schema, v, path, errs):
    unknown = set(schema) - SCHEMA_KEYS
    if unknown:
        errs.append("%s: schema keyword(s) %s not implemented by this validator" % (path, sorted(unknown)))
    if v is None:
        if not schema.get("nullable"):
            errs.append("%s: null" % path)
        return
    if schema.get("x-kubernetes-int-or-string"):
        if not (_type_ok("integer", v) or _type_ok("string", v)):
            errs.append("%s: %r is neither an integer nor a string" % (path, v))
    elif "type" in schema and not _type_ok(schema["type"], v):
        errs.append("%s: %r is not of type %s" % (path, v, schema["type"]))
        return
    if "enum" in schema and v not in schema["enum"]:
        errs.append("%s: %r not one of %s" % (path, v, schema["enum"]))
    if isinstance(v, str):
        if "pattern" in schema and not re.search(schema["pattern"], v):
            errs.append("%s: %r does not match %s" % (path, v, schema["pattern"]))
        if len(v) < schema.get("minLength", 0):
            errs.append("%s: %r shorter than %d" % (path, v, schema["minLength"]))
        if "maxLength" in schema and len(v) > schema["maxLength"]:
            errs.append("%s: longer than %d" % (path, schema["maxLength"]))
        if schema.get("format") == "date-time" and not DATE_TIME.match(v):
            errs.append("%s: %r is not a date-time" % (path, v))
    if _type_ok("number", v):
        if "minimum" in schema and v < schema["minimum"]:
            errs.append("%s: %r below minimum %r" % (path, v, schema["minimum"]))
        if "maximum" in schema and v > schema["maximum"]:
            errs.append("%s: %r above maximum %r" % (path, v, schema["maximum"]))
        lo, hi = INT_RANGE.get(schema.get("format"), (None, None))
        if lo is not None and not lo <= v <= hi:
            errs.append("%s: %r out of %s range" % (path, v, schema["format"]))
    if isinstance(v, dict):
        props = schema.get("properties", {})
        for k in schema.get("required", []):
            if k not in v:
                errs.append("%s: required property %r missing" % (path, k))
        ap = schema.get("additionalProperties")
        for k, sub in v.items():
            if k in props:
                validate(props[k], sub, "%s.%s" % (path, k), errs)
            elif isinstance(ap, dict):
                validate(ap, sub, "%s[%s]" % (path, k), errs)
            elif not (ap is True or schema.get("x-kubernetes-preserve-unknown-fields")):
                errs.append("%s: unknown property %r (not in the schema)" % (path, k))
        if len(v) < schema.get("minProperties", 0):
            errs.append("%s: fewer than %d properties" % (path, schema["minProperties"]))
        if "maxProperties" in schema and len(v) > schema["maxProperties"]:
            errs.append("%s: more than %d properties" % (path, schema["maxProperties"]))
    if isinstance(v, list):
        if len(v) < schema.get("minItems", 0):
            errs.append("%s: fewer than %d items" % (path, schema["minItems"]))
        if "maxItems" in schema and len(v) > schema["maxItems"]:
            errs.append("%s: more than %d items" % (path, schema["maxItems"]))
        if "items" in schema:
            for i, item in enumerate(v):
                validate(schema["items"], item, "%s[%d]" % (path, i), errs)
        lt = schema.get("x-kubernetes-list-type")
        if lt == "set" and len({repr(x) for x in v}) != len(v):
            errs.append("%s: duplicate items in a set" % path)
        if lt == "map":
            keys = [tuple(repr(x.get(k)) for k in schema.get("x-kubernetes-list-map-keys", [])) for x in v]
            if len(set(keys)) != len(keys):
                errs.append("%s: duplicate map keys %s" % (path, schema.get("x-kubernetes-list-map-keys")))
    for rule in schema.get("x-kubernetes-validations", []):
        pred = CEL.get(_cel_key(rule["rule"]))
        if pred is None:
            errs.append("%s: CEL rule %r not implemented by this test" % (path, rule["rule"]))
        elif not pred(v):
            errs.append("%s: %s (CEL: %s)" % (path, rule.get("message", "rule failed"), rule["rule"]))


def load_crds():
    """{(group, version, kind): openAPIV3Schema} from crds/*.yaml."""
    out = {}
    for f in sorted(os.listdir(CRD_DIR)):
        if not f.endswith(".yaml"):
            continue
        for d in load_yaml(os.path.join(CRD_DIR, f)):
            if not d or d.get("kind") != "CustomResourceDefinition":
                continue
            s = d["spec"]
            for ver in s["versions"]:
                out[(s["group"], ver["name"], s["names"]["kind"])] = ver["schema"]["openAPIV3Schema"]
    return out


# ------------------------------------------------------------ built-in kinds
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_NAME = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
BUILTIN = {  # kind: apiVersion
    "Deployment": "apps/v1", "Service": "v1", "ServiceAccount": "v1", "ConfigMap": "v1",
    "Role": "rbac.authorization.k8s.io/v1", "RoleBinding": "rbac.authorization.k8s.io/v1",
    "ClusterRole": "rbac.authorization.k8s.io/v1", "ClusterRoleBinding": "rbac.authorization.k8s.io/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2", "PodDisruptionBudget": "policy/v1",
}


def check_metadata(o, where, errs):
    md = o.get("metadata") or {}
    name = md.get("name", "")
    if not (DNS1123_SUBDOMAIN.match(name) and len(name) <= 253):
        errs.append("%s: metadata.name %r is not a DNS-1123 subdomain" % (where, name))
    if o.get("kind") in ("Service",) and not DNS1123_LABEL.match(name):
        errs.append("%s: a Service name must be a DNS-1123 label" % where)
    for k, val in (md.get("labels") or {}).items():
        if not LABEL_NAME.match(k) or not isinstance(val, str) or not LABEL_VALUE.match(val) or len(val) > 63:
            errs.append("%s: label %r=%r invalid" % (where, k, val))


def container_ports(pod_spec):
    """{name or number: containerPort} over the pod's containers."""
    out = {}
    for c in pod_spec.get("containers", []):
        for p in c.get("ports", []):
            out[p["containerPort"]] = p["containerPort"]
            if "name" in p:
                out[p["name"]] = p["containerPort"]
    return out


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_builtin(o, where, objs, errs):
    kind = o["kind"]
    if o.get("apiVersion") != BUILTIN[kind]:
        errs.append("%s: apiVersion %r, expected %s" % (where, o.get("apiVersion"), BUILTIN[kind]))
    spec = o.get("spec") or {}
    if kind == "Deployment":
        tmpl = spec.get("template", {})
        labels = tmpl.get("metadata", {}).get("labels", {})
        if not selects(spec.get("selector", {}).get("matchLabels"), labels):
            errs.append("%s: spec.selector does not select its own pod template" % where)
        pod = tmpl.get("spec", {})
        ports = container_ports(pod)
        if not pod.get("containers"):
            errs.append("%s: no containers" % where)
        names = set()
        for c in pod.get("containers", []):
            if not c.get("name") or not c.get("image") or c["name"] in names:
                errs.append("%s: a container without a (unique) name or an image" % where)
            names.add(c.get("name"))
            for p in c.get("ports", []):
                if not (isinstance(p.get("containerPort"), int) and 0 < p["containerPort"] < 65536):
                    errs.append("%s: containerPort %r" % (where, p.get("containerPort")))
                if "name" in p and (len(p["name"]) > 15 or not DNS1123_LABEL.match(p["name"])):
                    errs.append("%s: port name %r is not an IANA_SVC_NAME" % (where, p["name"]))
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                pr = c.get(probe)
                if not pr:
                    continue
                for h in ("httpGet", "tcpSocket", "grpc"):
                    if h in pr and pr[h].get("port") not in ports:
                        errs.append("%s: %s.%s port %r is not a container port" % (where, probe, h, pr[h].get("port")))
            for m in c.get("volumeMounts", []):
                if m["name"] not in {v["name"] for v in pod.get("volumes", [])}:
                    errs.append("%s: volumeMount %r has no volume" % (where, m["name"]))
        sa = pod.get("serviceAccountName")
        if sa and not find(objs, "ServiceAccount", sa):
            errs.append("%s: serviceAccountName %r has no ServiceAccount in the overlay" % (where, sa))
        for v in pod.get("volumes", []):
            if "configMap" in v and not find(objs, "ConfigMap", v["configMap"]["name"]):
                errs.append("%s: volume %r: no ConfigMap %r" % (where, v["name"], v["configMap"]["name"]))
    elif kind == "Service":
        sel = spec.get("selector") or {}
        pods = [d for d in objs if d["kind"] == "Deployment"
                and selects(sel, d["spec"]["template"]["metadata"].get("labels", {}))]
        if len(pods) != 1:
            errs.append("%s: selects the pods of %d Deployments, expected 1" % (where, len(pods)))
        for p in spec.get("ports", []):
            if not isinstance(p.get("port"), int):
                errs.append("%s: port %r" % (where, p.get("port")))
            tp = p.get("targetPort", p.get("port"))
            for d in pods:
                if tp not in container_ports(d["spec"]["template"]["spec"]):
                    errs.append("%s: targetPort %r is not a port of %s's containers" % (where, tp, d["metadata"]["name"]))
    elif kind in ("Role", "ClusterRole"):
        for r in o.get("rules", []):
            if not (r.get("apiGroups") is not None and r.get("resources") and r.get("verbs")):
                errs.append("%s: a rule without apiGroups/resources/verbs" % where)
    elif kind in ("RoleBinding", "ClusterRoleBinding"):
        ref = o.get("roleRef", {})
        allowed = ("Role", "ClusterRole") if kind == "RoleBinding" else ("ClusterRole",)
        if ref.get("apiGroup") != "rbac.authorization.k8s.io" or ref.get("kind") not in allowed:
            errs.append("%s: roleRef %r" % (where, ref))
        elif not find(objs, ref["kind"], ref.get("name")):
            errs.append("%s: roleRef names %s/%s, not in the overlay" % (where, ref.get("kind"), ref.get("name")))
        for s in o.get("subjects", []):
            if s.get("kind") == "ServiceAccount":
                if kind == "ClusterRoleBinding" and not s.get("namespace"):
                    errs.append("%s: a ClusterRoleBinding's ServiceAccount subject needs a namespace" % where)
                if not find(objs, "ServiceAccount", s.get("name")):
                    errs.append("%s: subject ServiceAccount %r not in the overlay" % (where, s.get("name")))
    elif kind == "ConfigMap":
        for k, val in (o.get("data") or {}).items():
            if not isinstance(val, str):
                errs.append("%s: data[%s] is not a string" % (where, k))
    elif kind == "HorizontalPodAutoscaler":
        ref = spec.get("scaleTargetRef", {})
        if not find(objs, ref.get("kind"), ref.get("name")):
            errs.append("%s: scaleTargetRef %r not in the overlay" % (where, ref))
    elif kind == "PodDisruptionBudget":
        sel = spec.get("selector", {}).get("matchLabels")
        if not any(d["kind"] == "Deployment" and selects(sel, d["spec"]["template"]["metadata"]["labels"])
                   for d in objs):
            errs.append("%s: selects no pods" % where)


# --------------------------------------------------------------- references
def find(objs, kind, name):
    for d in objs:
        if d.get("kind") == kind and d.get("metadata", {}).get("name") == name:
            return d
    return None


def parse_args(args):
    """--flag value / --flag=value / --bool -> {flag: value}; a flag given
    twice maps to None (an error for the caller)."""
    out, i = {}, 0
    args = [str(a) for a in args]
    while i < len(args):
        a = args[i]
        if not a.startswith("-"):
            out.setdefault("", []).append(a)
            i += 1
            continue
        a = a.lstrip("-")
        if "=" in a:
            k, val = a.split("=", 1)
            i += 1
        elif i + 1 < len(args) and not args[i + 1].startswith("-"):
            k, val = a, args[i + 1]
            i += 2
        else:
            k, val = a, "true"
            i += 1
        out[k] = None if k in out else val
    return out


def rbac_allows(rules, group, resource, verbs):
    for r in rules:
        if (group in r.get("apiGroups", []) or "*" in r.get("apiGroups", [])) and \
           (resource in r.get("resources", []) or "*" in r.get("resources", [])):
            verbs = [v for v in verbs if v not in r.get("verbs", []) and "*" not in r.get("verbs", [])]
            if not verbs:
                return True
    return False


def exported_vllm_series():
    """The vllm: series server/srv_metrics.c's vllm_compat() writes."""
    with open(os.path.join(REPO, "server", "srv_metrics.c")) as f:
        src = f.read()
    m = re.search(r"static void vllm_compat\(.*?\n}\n", src, re.S)
    if not m:
        fail("server/srv_metrics.c: no vllm_compat() to read the vllm: series from")
    body = m.group(0)
    names = set(re.findall(r'(?:gauge|counter)\(o, P, s, "(\w+)"', body))
    names |= set(re.findall(r'metric\(o, P, "\w+", "(\w+)"', body))
    names |= set(re.findall(r'hist\(o, P, s, &s->\w+, "(\w+)"\)', body))
    return {"vllm:" + n for n in names}


def check_refs(objs, vllm_series, errs):
    def need(cond, msg):
        if not cond:
            errs.append(msg)

    pools = [d for d in objs if d["kind"] == "InferencePool"]
    need(len(pools) == 1, "one InferencePool (got %d)" % len(pools))
    dep = find(objs, "Deployment", "mfaserve")
    need(dep is not None, "the base's mfaserve Deployment is in the overlay")
    if not pools or dep is None:
        return
    pool = pools[0]
    pname = pool["metadata"]["name"]
    need(pool["apiVersion"] == POOL_GROUP + "/v1", "InferencePool is %s/v1" % POOL_GROUP)
    ps = pool.get("spec", {})
    pod = dep["spec"]["template"]
    labels = pod["metadata"].get("labels", {})
    srv = next((c for c in pod["spec"]["containers"] if c["name"] == "mfaserve"), None)
    need(srv is not None, "mfaserve Deployment has a container named mfaserve")
    if srv is None:
        return
    env = {e["name"]: e.get("value") for e in srv.get("env", [])}

    # The pool selects the mfaserve pods, and only them.
    sel = ps.get("selector", {}).get("matchLabels", {})
    need(selects(sel, labels), "InferencePool selector %r matches the mfaserve pod labels %r" % (sel, labels))
    for d in objs:
        if d["kind"] == "Deployment" and d is not dep:
            need(not selects(sel, d["spec"]["template"]["metadata"].get("labels", {})),
                 "InferencePool selector does not also select %s's pods" % d["metadata"]["name"])

    # Target port = the server's container port = where /metrics is.
    port = int(env.get("MFASERVE_PORT", "8000"))
    cports = [p["containerPort"] for p in srv.get("ports", [])]
    tps = [p.get("number") for p in ps.get("targetPorts", [])]
    need(tps == [port] and port in cports,
         "InferencePool targetPorts %r = [the server's port %d] (container ports %r)" % (tps, port, cports))
    ann = pod["metadata"].get("annotations", {})
    need(ann.get("prometheus.io/port") in (None, str(port)), "the pods' /metrics is on the pool's target port")

    # The server exports vLLM's names.
    need(env.get("MFASERVE_METRICS_COMPAT") == "vllm", "mfaserve runs with MFASERVE_METRICS_COMPAT=vllm")
    sargs = parse_args(srv.get("args", []))
    need(sargs.get("metrics-compat") in (None, "vllm"), "mfaserve args do not turn --metrics-compat off")
    for s in EPP_READS:
        need(s in vllm_series, "mfaserve exports %s (server/srv_metrics.c vllm_compat)" % s)

    # The endpoint picker: its Service, Deployment, args, config, RBAC.
    ref = ps.get("endpointPickerRef", {})
    need(ref.get("kind", "Service") == "Service" and ref.get("group", "") == "",
         "endpointPickerRef is a core Service")
    esvc = find(objs, "Service", ref.get("name"))
    need(esvc is not None, "endpointPickerRef names a Service of the overlay (%r)" % ref.get("name"))
    if esvc is None:
        return
    eps = [d for d in objs if d["kind"] == "Deployment"
           and selects(esvc["spec"].get("selector"), d["spec"]["template"]["metadata"].get("labels", {}))]
    need(len(eps) == 1 and eps[0] is not dep, "the EPP Service selects the EPP's pods (and not mfaserve's)")
    if len(eps) != 1:
        return
    epp = eps[0]
    epod = epp["spec"]["template"]["spec"]
    ec = (epod.get("containers") or [{}])[0]
    eargs = parse_args(ec.get("args", []))
    flag = lambda k: eargs.get(k, EPP_FLAG_DEFAULTS.get(k))  # noqa: E731
    eports = container_ports(epod)
    rport = ref.get("port", {}).get("number")
    svcport = [p for p in esvc["spec"].get("ports", []) if p.get("port") == rport]
    need(len(svcport) == 1, "endpointPickerRef port %r is a port of Service %s" % (rport, esvc["metadata"]["name"]))
    if svcport:
        tp = svcport[0].get("targetPort", rport)
        need(eports.get(tp) == int(flag("grpc-port")),
             "EPP Service port %r reaches the EPP's --grpc-port %s" % (rport, flag("grpc-port")))
    for k in eargs:
        need(k in EPP_FLAGS, "EPP flag --%s exists in the %s EPP" % (k, EPP_RELEASE))
        need(eargs[k] is not None, "EPP flag --%s given once" % k)
    need(flag("pool-name") == pname, "EPP --pool-name %r is the pool %r" % (flag("pool-name"), pname))
    need(flag("pool-group") == POOL_GROUP, "EPP --pool-group is %s" % POOL_GROUP)
    ens = flag("pool-namespace")
    envs = {e["name"]: e for e in ec.get("env", [])}
    m = re.fullmatch(r"\$\((\w+)\)", ens or "")
    need(bool(m) and envs.get(m.group(1), {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
         == "metadata.namespace" or ens == pool["metadata"].get("namespace"),
         "EPP --pool-namespace %r is the pool's namespace (the pod's own, from the downward API)" % ens)
    for probe in ("livenessProbe", "readinessProbe"):
        need(ec.get(probe, {}).get("grpc", {}).get("port") == int(flag("grpc-health-port")),
             "EPP %s on --grpc-health-port" % probe)
    need(ec.get("image", "").endswith("/epp:" + EPP_RELEASE),
         "EPP image %r is release %s (the CRDs' release)" % (ec.get("image"), EPP_RELEASE))
    need(epod.get("terminationGracePeriodSeconds", 30) >= dep["spec"]["template"]["spec"].get(
        "terminationGracePeriodSeconds", 30), "EPP grace period >= the pool pods' (upstream's advice)")
    for k in ("total-queued-requests-metric", "kv-cache-usage-percentage-metric", "lora-info-metric"):
        need(flag(k) in vllm_series, "EPP --%s %r is a series mfaserve exports" % (k, flag(k)))

    # --config-file: a key of the ConfigMap mounted at its directory.
    cf = flag("config-file") or ""
    cfg = None
    for vm in ec.get("volumeMounts", []):
        if cf.startswith(vm["mountPath"].rstrip("/") + "/"):
            vol = [v for v in epod.get("volumes", []) if v["name"] == vm["name"]]
            cm = vol and "configMap" in vol[0] and find(objs, "ConfigMap", vol[0]["configMap"]["name"])
            if cm:
                cfg = (cm.get("data") or {}).get(cf[len(vm["mountPath"].rstrip("/")) + 1:])
    need(cfg is not None, "EPP --config-file %r is a key of a mounted ConfigMap" % cf)
    if cfg is not None:
        c = yaml.safe_load(cfg)
        need(c.get("apiVersion") == "inference.networking.x-k8s.io/v1alpha1" and c.get("kind") == "EndpointPickerConfig",
             "EPP config is an EndpointPickerConfig (inference.networking.x-k8s.io/v1alpha1)")
        plugins = {p.get("name", p.get("type")): p.get("type") for p in c.get("plugins", [])}
        for n, t in plugins.items():
            need(t in EPP_PLUGINS, "EPP plugin type %r exists in the %s EPP" % (t, EPP_RELEASE))
        need(c.get("schedulingProfiles"), "EPP config has a scheduling profile")
        for prof in c.get("schedulingProfiles", []):
            for p in prof.get("plugins", []):
                need(p.get("pluginRef") in plugins, "profile %s: pluginRef %r is a declared plugin"
                     % (prof.get("name"), p.get("pluginRef")))
                need(isinstance(p.get("weight", 1), int) and p.get("weight", 1) >= 0, "plugin weight is an int >= 0")

    # RBAC: the EPP's ServiceAccount may watch pods, its pool and the
    # objectives in its namespace, and create token/access reviews.
    sa = epod.get("serviceAccountName")
    need(sa and find(objs, "ServiceAccount", sa), "EPP runs as a ServiceAccount of the overlay")
    ns_rules, cl_rules = [], []
    for b in objs:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == sa for s in b.get("subjects", [])):
            continue
        role = find(objs, b["roleRef"]["kind"], b["roleRef"]["name"]) or {}
        (ns_rules if b["kind"] == "RoleBinding" else cl_rules).extend(role.get("rules", []))
    watch = ["get", "list", "watch"]
    for g, r in (("", "pods"), (flag("pool-group"), "inferencepools"), (OBJECTIVE_GROUP, "inferenceobjectives")):
        need(rbac_allows(ns_rules + cl_rules, g, r, watch), "EPP RBAC: get/list/watch %s (group %r)" % (r, g))
    for g, r in (("authentication.k8s.io", "tokenreviews"), ("authorization.k8s.io", "subjectaccessreviews")):
        need(rbac_allows(cl_rules, g, r, ["create"]), "EPP RBAC: create %s (cluster-wide)" % r)

    # The objective points at the pool; the route's backend is the pool and
    # its parent the Gateway.
    objectives = [d for d in objs if d["kind"] == "InferenceObjective"]
    need(objectives, "an InferenceObjective")
    for o in objectives:
        pr = o.get("spec", {}).get("poolRef", {})
        need(pr.get("name") == pname and pr.get("group") == POOL_GROUP and pr.get("kind") == "InferencePool",
             "InferenceObjective %s poolRef %r is the pool" % (o["metadata"]["name"], pr))
    routes = [d for d in objs if d["kind"] == "HTTPRoute"]
    need(routes, "an HTTPRoute")
    for r in routes:
        rn = r["metadata"]["name"]
        brefs = [b for rule in r.get("spec", {}).get("rules", []) for b in rule.get("backendRefs", [])]
        need(brefs, "HTTPRoute %s has backendRefs" % rn)
        for b in brefs:
            need(b.get("group") == POOL_GROUP and b.get("kind") == "InferencePool" and b.get("name") == pname
                 and "port" not in b, "HTTPRoute %s backendRef %r is the InferencePool" % (rn, b))
        for p in r.get("spec", {}).get("parentRefs", []):
            gw = find(objs, "Gateway", p.get("name")) if p.get("group") == "gateway.networking.k8s.io" \
                and p.get("kind") == "Gateway" and not p.get("namespace") else None
            need(gw is not None, "HTTPRoute %s parentRef %r is the overlay's Gateway" % (rn, p))
            if gw:
                ls = [x for x in gw["spec"].get("listeners", [])
                      if p.get("sectionName") in (None, x["name"]) and x["protocol"] in ("HTTP", "HTTPS")]
                need(ls, "HTTPRoute %s attaches to an HTTP(S) listener of Gateway %s" % (rn, gw["metadata"]["name"]))


def check_all(objs, crds):
    """Every check on the rendered objects (copied: defaulting writes to
    them). Returns the list of failures."""
    objs = copy.deepcopy(objs)
    errs = []
    names = set()
    for o in objs:
        kind, api = o.get("kind"), o.get("apiVersion", "")
        where = "%s/%s" % (kind, o.get("metadata", {}).get("name"))
        if (kind, where) in names:
            errs.append("%s: twice" % where)
        names.add((kind, where))
        check_metadata(o, where, errs)
        group, _, version = api.rpartition("/")
        schema = crds.get((group, version, kind))
        if schema is not None:
            apply_defaults(schema, o)
            # metadata is the API server's ObjectMeta (check_metadata above),
            # not described by CRD schemas beyond "type: object".
            validate(schema, dict(o, metadata={}), where, errs)
        elif kind in BUILTIN:
            check_builtin(o, where, objs, errs)
        else:
            errs.append("%s: %s is neither a built-in kind this test knows nor a CRD in tests/deploy/crds" % (where, api))
    check_refs(objs, VLLM_SERIES, errs)
    return errs


# --------------------------------------------------------------- mutations
def _obj(objs, kind, name=None):
    return [d for d in objs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)][0]


def _epp_args(objs):
    return _obj(objs, "Deployment", "mfaserve-epp")["spec"]["template"]["spec"]["containers"][0]["args"]


def _set_arg(objs, flag, val):
    a = _epp_args(objs)
    a[a.index(flag) + 1] = val


def _mfaserve_env(objs):
    return _obj(objs, "Deployment", "mfaserve")["spec"]["template"]["spec"]["containers"][0]["env"]


def _label_epp_like_mfaserve(objs):
    d = _obj(objs, "Deployment", "mfaserve-epp")["spec"]
    d["selector"]["matchLabels"] = {"app.kubernetes.io/name": "mfaserve"}
    d["template"]["metadata"]["labels"] = {"app.kubernetes.io/name": "mfaserve"}


MUTATIONS = [
    ("InferencePool without targetPorts (required)",
     lambda o: _obj(o, "InferencePool")["spec"].pop("targetPorts")),
    ("InferencePool targetPorts number 0 (minimum 1)",
     lambda o: _obj(o, "InferencePool")["spec"]["targetPorts"][0].update(number=0)),
    ("InferencePool targetPorts on another port than the server's",
     lambda o: _obj(o, "InferencePool")["spec"]["targetPorts"][0].update(number=8001)),
    ("InferencePool selector that misses the mfaserve pods",
     lambda o: _obj(o, "InferencePool")["spec"]["selector"]["matchLabels"].update(
         {"app.kubernetes.io/name": "mfaserve-x"})),
    ("InferencePool with an empty selector",
     lambda o: _obj(o, "InferencePool")["spec"]["selector"].update(matchLabels={})),
    ("EPP pods labelled like the mfaserve pods (the pool would take them)", _label_epp_like_mfaserve),
    ("InferencePool endpointPickerRef without port (CEL rule)",
     lambda o: _obj(o, "InferencePool")["spec"]["endpointPickerRef"].pop("port")),
    ("InferencePool endpointPickerRef to the metrics port",
     lambda o: _obj(o, "InferencePool")["spec"]["endpointPickerRef"]["port"].update(number=9090)),
    ("InferencePool endpointPickerRef to a missing Service",
     lambda o: _obj(o, "InferencePool")["spec"]["endpointPickerRef"].update(name="epp")),
    ("InferencePool failureMode outside the enum",
     lambda o: _obj(o, "InferencePool")["spec"]["endpointPickerRef"].update(failureMode="Fail")),
    ("InferencePool with a misspelt field",
     lambda o: _obj(o, "InferencePool")["spec"].update(targetPort=[{"number": 8000}])),
    ("InferenceObjective poolRef to another pool",
     lambda o: _obj(o, "InferenceObjective")["spec"]["poolRef"].update(name="other")),
    ("InferenceObjective without poolRef (required)",
     lambda o: _obj(o, "InferenceObjective")["spec"].pop("poolRef")),
    ("InferenceObjective priority as a string",
     lambda o: _obj(o, "InferenceObjective")["spec"].update(priority="high")),
    ("HTTPRoute backend a Service without port (CEL rule)",
     lambda o: _obj(o, "HTTPRoute")["spec"]["rules"][0]["backendRefs"][0].update(group="", kind="Service")),
    ("HTTPRoute backend another pool",
     lambda o: _obj(o, "HTTPRoute")["spec"]["rules"][0]["backendRefs"][0].update(name="other")),
    ("HTTPRoute parent not the Gateway",
     lambda o: _obj(o, "HTTPRoute")["spec"]["parentRefs"][0].update(name="other")),
    ("HTTPRoute timeout not a Gateway API duration",
     lambda o: _obj(o, "HTTPRoute")["spec"]["rules"][0]["timeouts"].update(request="10min")),
    ("Gateway without listeners (required)",
     lambda o: _obj(o, "Gateway")["spec"].pop("listeners")),
    ("EPP --pool-name another pool", lambda o: _set_arg(o, "--pool-name", "other")),
    ("EPP --config-file not in the ConfigMap", lambda o: _set_arg(o, "--config-file", "/config/x.yaml")),
    ("EPP --kv-cache-usage-percentage-metric a series mfaserve lacks",
     lambda o: _set_arg(o, "--kv-cache-usage-percentage-metric", "vllm:kv_cache_usage")),
    ("EPP flag the v1.0.0 EPP does not have", lambda o: _epp_args(o).extend(["--no-such-flag", "1"])),
    ("EPP image of another release",
     lambda o: _obj(o, "Deployment", "mfaserve-epp")["spec"]["template"]["spec"]["containers"][0].update(
         image="registry.k8s.io/gateway-api-inference-extension/epp:v0.5.1")),
    ("EPP config with an unknown plugin type",
     lambda o: _obj(o, "ConfigMap").update(data={k: v.replace("queue-scorer", "queue-scorerx", 1)
                                                  for k, v in _obj(o, "ConfigMap")["data"].items()})),
    ("EPP Role without pods",
     lambda o: _obj(o, "Role")["rules"].pop(0)),
    ("EPP Role without watch on inferenceobjectives",
     lambda o: _obj(o, "Role")["rules"][2].update(verbs=["get", "list"])),
    ("EPP ClusterRoleBinding subject without namespace",
     lambda o: _obj(o, "ClusterRoleBinding")["subjects"][0].pop("namespace")),
    ("EPP Service targetPort not a container port",
     lambda o: _obj(o, "Service", "mfaserve-epp")["spec"]["ports"][0].update(targetPort="grpcx")),
    ("mfaserve with --metrics-compat none",
     lambda o: [e.update(value="none") for e in _mfaserve_env(o) if e["name"] == "MFASERVE_METRICS_COMPAT"]),
    ("mfaserve without MFASERVE_METRICS_COMPAT",
     lambda o: _mfaserve_env(o).__setitem__(slice(None), [e for e in _mfaserve_env(o)
                                                           if e["name"] != "MFASERVE_METRICS_COMPAT"])),
]


# Mutations of the CRD schemas: the validator must refuse what it cannot check.
def _pool_schema(c):
    return c[(POOL_GROUP, "v1", "InferencePool")]["properties"]["spec"]


SCHEMA_MUTATIONS = [
    ("a CEL rule this test does not implement",
     lambda c: _pool_schema(c).setdefault("x-kubernetes-validations", []).append({"rule": "size(self.targetPorts) < 2"})),
    ("a schema keyword the validator does not know",
     lambda c: _pool_schema(c).update(oneOf=[{"required": ["selector"]}])),
]


# -------------------------------------------------------------------- main
kubectl = shutil.which("kubectl")
if not kubectl:
    skip("kubectl not found")
r = subprocess.run([kubectl, "kustomize", OVERLAY], capture_output=True, text=True, timeout=60)
ver = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True).stdout
kv = re.search(r"Kustomize Version: v(\d+)\.(\d+)", ver)
if r.returncode != 0:
    if not kv or int(kv.group(1)) < 3:
        skip("this kubectl's kustomize (%s) cannot render the overlay:\n%s" % (kv and kv.group(0), r.stderr))
    fail("kubectl kustomize %s:\n%s" % (OVERLAY, r.stderr))
objs = [d for d in yaml.safe_load_all(r.stdout) if d]
print("rendered:", ", ".join("%s/%s" % (d["kind"], d["metadata"]["name"]) for d in objs))
crds = load_crds()
print("CRD schemas:", ", ".join("%s/%s %s" % k for k in sorted(crds)))
VLLM_SERIES = exported_vllm_series()
print("mfaserve exports %d vllm: series" % len(VLLM_SERIES))
kinds = {d["kind"] for d in objs}
need = {"InferencePool", "InferenceObjective", "HTTPRoute", "Gateway", "Deployment", "Service", "ConfigMap",
        "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
errors = ["kinds missing from the overlay: %s" % sorted(need - kinds)] if need - kinds else []
errors += check_all(objs, crds)
for e in errors:
    print("  not ok:", e)
checked = sum(1 for d in objs if (d["apiVersion"].rpartition("/")[0], d["apiVersion"].rpartition("/")[2], d["kind"]) in crds)
print("%d objects, %d of them validated against CRD schemas: %d problem(s)" % (len(objs), checked, len(errors)))
if errors:
    fail("%d check(s) failed" % len(errors))

# On the clean render, each mutation must be caught, or the check it stands
# for is not checking.
missed = []
for what, mutate in MUTATIONS:
    m = copy.deepcopy(objs)
    mutate(m)
    e = check_all(m, crds)
    print("  mutation %-62s -> %s" % (what, ("caught: " + e[0]) if e else "NOT CAUGHT"))
    if not e:
        missed.append(what)
for what, mutate in SCHEMA_MUTATIONS:
    c = copy.deepcopy(crds)
    mutate(c)
    e = check_all(objs, c)
    print("  CRD mutation %-58s -> %s" % (what, ("caught: " + e[0]) if e else "NOT CAUGHT"))
    if not e:
        missed.append(what)
if missed:
    fail("%d mutation(s) not caught: %s" % (len(missed), missed))
print("PASS")
