#!/usr/bin/env python3
"""Offline checks of Polar's Kubernetes manifests (k8s/). No cluster needed.

Run by ctest through tests/deploy/k8s_run, which picks kubectl and the Python
of the repository's .venv/ (scripts/install-deps puts kubernetes-validate,
jsonschema and PyYAML there, at the versions of ../python-requirements.txt).

  k8s_test.py render OVERLAY
      Renders k8s/overlays/OVERLAY with `kubectl kustomize` and checks every
      object against the Kubernetes API schemas (kubernetes-validate, strict:
      unknown fields fail) of the oldest and the newest Kubernetes it supports,
      and the prometheus-operator objects against k8s_schemas/. Then the
      things a reviewer checks by hand: probes, resources and a non-root
      security context on every container; ports and names agreeing between
      the Deployments, their flags, the Services, the ServiceMonitor and the
      NetworkPolicies; the gateway's --workers name being the headless worker
      Service in the pods' namespace; draining fitting in the termination
      grace; the PDBs, the HPA and its prometheus-adapter rules.
  k8s_test.py rules
      k8s/base/prometheusrule.yaml is exactly what k8s/tools/gen-prometheusrule
      makes of deploy/prometheus/rules/*.yml.
  k8s_test.py run OVERLAY --worker BIN --gateway BIN --polar BIN --model GGUF
      Starts polar-worker and polar-gateway with the overlay's rendered
      arguments (only the listen addresses, the model's directory and the
      worker address are local), streams a completion through them, scrapes
      the metrics the HPA scales on, compares the worker's resident memory
      plus its KV cache with the memory limit, and stops both with SIGTERM
      within their terminationGracePeriodSeconds.

Every check prints one line; the exit status is 1 when any failed.
"""
import argparse
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import jsonschema
import kubernetes_validate
import referencing
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
SCHEMAS = pathlib.Path(__file__).resolve().parent / "k8s_schemas"
NAMESPACE = "polar"
# gRPC probes (`grpc:`) are GA since Kubernetes 1.27: the oldest version the
# manifests target. The newest is the newest kubernetes-validate knows.
OLDEST_KUBERNETES = "1.27"
UID = 10001
WORKER_LABELS = {"app.kubernetes.io/name": "polar", "app.kubernetes.io/component": "worker"}
GATEWAY_LABELS = {"app.kubernetes.io/name": "polar", "app.kubernetes.io/component": "gateway"}


class Checks:
    """Collects results: one line per check, failures listed again at the end."""

    def __init__(self):
        self.failures = []

    def check(self, ok, what, detail=""):
        print(("ok    " if ok else "FAIL  ") + what + (f": {detail}" if detail and not ok else ""))
        if not ok:
            self.failures.append(what + (f": {detail}" if detail else ""))
        return ok

    def finish(self):
        if self.failures:
            print(f"\n{len(self.failures)} check(s) failed:")
            for f in self.failures:
                print("  " + f)
            return 1
        print("\nall checks passed")
        return 0


# ---------------------------------------------------------------- rendering

def kubectl():
    return os.environ.get("POLAR_KUBECTL", "kubectl")


def render(overlay):
    path = K8S / "overlays" / overlay
    proc = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True)
    for line in proc.stderr.splitlines():
        print(f"kubectl: {line}")
    if proc.returncode != 0:
        sys.exit(f"FAIL  kubectl kustomize {path.relative_to(ROOT)} exited {proc.returncode}")
    objects = [o for o in yaml.safe_load_all(proc.stdout) if o]
    print(f"ok    kubectl kustomize {path.relative_to(ROOT)}: {len(objects)} objects")
    return objects


def index(objects):
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def matches(selector, labels):
    """Does a LabelSelector (matchLabels and matchExpressions) select `labels`?"""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def expand(text, env):
    """The kubelet's $(VAR) expansion in args: defined names are replaced,
    $$ is a literal $, undefined references stay as written."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


def container_env(container, pod_namespace, objs):
    """The environment a container starts with: envFrom ConfigMaps, then env."""
    env = {}
    for source in container.get("envFrom") or []:
        ref = source.get("configMapRef")
        if ref is None:
            raise ValueError(f"envFrom {source} is not a configMapRef")
        cm = objs.get(("ConfigMap", ref["name"]))
        if cm is None:
            raise ValueError(f"envFrom names ConfigMap {ref['name']}, which is not rendered")
        env.update({k: str(v) for k, v in (cm.get("data") or {}).items()})
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = expand(var["value"], env)
        elif var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            env[var["name"]] = pod_namespace
        elif "configMapKeyRef" in var.get("valueFrom", {}):
            ref = var["valueFrom"]["configMapKeyRef"]
            env[var["name"]] = str(objs[("ConfigMap", ref["name"])]["data"][ref["key"]])
        else:
            raise ValueError(f"env {var['name']}: source not understood by this test")
    return env


def expanded_args(deployment, objs):
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = container_env(container, deployment["metadata"].get("namespace", "default"), objs)
    return [expand(a, env) for a in container.get("args") or []]


def flags_of(args):
    flags = {}
    for a in args:
        m = re.fullmatch(r"--([a-z0-9_-]+)=(.*)", a, re.S)
        if m is None:
            raise ValueError(f"argument {a!r} is not --name=value")
        flags[m.group(1)] = m.group(2)
    return flags


def host_port(address):
    host, _, port = address.rpartition(":")
    return host, int(port)


def quantity(value):
    """A Kubernetes quantity (cpu or memory) as a float: 500m, 2, 1536Mi, 8Gi."""
    units = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    if m is None or m.group(2) not in units:
        raise ValueError(f"quantity {value!r} not understood")
    return float(m.group(1)) * units[m.group(2)]


def container_port(pod_spec, port):
    """The containerPort a Service targetPort / NetworkPolicy port (name or number) means."""
    for c in pod_spec["containers"]:
        for p in c.get("ports") or []:
            if port == p.get("name") or port == p["containerPort"]:
                return p["containerPort"]
    return None


# --------------------------------------------------------- schema validation

def crd_validators():
    resources = {}
    for path in SCHEMAS.glob("*.schema.json"):
        schema = json.loads(path.read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        resources[schema["$id"]] = referencing.Resource.from_contents(schema)
    registry = referencing.Registry().with_resources(resources.items())
    validators = {}
    for kind in ("ServiceMonitor", "PrometheusRule"):
        schema = json.loads((SCHEMAS / f"{kind.lower()}.schema.json").read_text())
        validators[kind] = jsonschema.Draft202012Validator(schema, registry=registry)
    return validators


def validate_schemas(c, objects, source):
    newest = kubernetes_validate.utils.latest_version()
    crds = crd_validators()
    for o in objects:
        name = f"{source}: {o['kind']}/{o['metadata']['name']}"
        if o["apiVersion"].startswith("monitoring.coreos.com/"):
            errors = sorted(crds[o["kind"]].iter_errors(o), key=lambda e: list(e.absolute_path))
            c.check(not errors, f"{name} valid against k8s_schemas/{o['kind'].lower()}.schema.json",
                    "; ".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]))
            continue
        for version in (OLDEST_KUBERNETES, newest):
            try:
                kubernetes_validate.validate(o, version, strict=True)
                c.check(True, f"{name} valid for Kubernetes {version} (strict)")
            except kubernetes_validate.ValidationError as e:
                c.check(False, f"{name} valid for Kubernetes {version} (strict)",
                        f"{'/'.join(map(str, e.path))}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                c.check(False, f"{name} has a schema for Kubernetes {version}", e.message)


# ------------------------------------------------------- structural checks

def check_objects(c, objects, overlay):
    objs = index(objects)
    expected = [("Namespace", NAMESPACE), ("ServiceAccount", "polar-worker"),
                ("ServiceAccount", "polar-gateway"), ("PersistentVolumeClaim", "polar-models"),
                ("Deployment", "polar-worker"), ("Deployment", "polar-gateway"),
                ("Service", "polar-worker"), ("Service", "polar-gateway"),
                ("PodDisruptionBudget", "polar-worker"), ("PodDisruptionBudget", "polar-gateway"),
                ("NetworkPolicy", "polar-worker"), ("NetworkPolicy", "polar-gateway"),
                ("HorizontalPodAutoscaler", "polar-worker"), ("ServiceMonitor", "polar"),
                ("PrometheusRule", "polar")]
    for key in expected:
        c.check(key in objs, f"{key[0]}/{key[1]} is rendered")
    if not all(key in objs for key in expected):
        return
    kinds = sorted({o["kind"] for o in objects})
    c.check(sum(o["kind"] == "ConfigMap" for o in objects) == 2, "two ConfigMaps (worker and gateway flags)",
            f"kinds: {kinds}")

    # Namespace and labels.
    ns = objs[("Namespace", NAMESPACE)]
    c.check(ns["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") == "restricted",
            "namespace enforces the restricted Pod Security Standard")
    for o in objects:
        if o["kind"] == "Namespace":
            continue
        name = f"{o['kind']}/{o['metadata']['name']}"
        c.check(o["metadata"].get("namespace") == NAMESPACE, f"{name} is in namespace {NAMESPACE}",
                f"namespace {o['metadata'].get('namespace')!r}")
        if o["kind"] != "ConfigMap":
            c.check((o["metadata"].get("labels") or {}).get("app.kubernetes.io/name") == "polar",
                    f"{name} is labelled app.kubernetes.io/name=polar")

    worker, gateway = objs[("Deployment", "polar-worker")], objs[("Deployment", "polar-gateway")]
    for dep, labels in ((worker, WORKER_LABELS), (gateway, GATEWAY_LABELS)):
        check_deployment(c, dep, labels, objs)
    worker_pod, gateway_pod = worker["spec"]["template"]["spec"], gateway["spec"]["template"]["spec"]
    wflags, gflags = flags_of(expanded_args(worker, objs)), flags_of(expanded_args(gateway, objs))
    # A flag renamed or misspelled in a manifest fails here, plainly, rather
    # than as a KeyError in the checks that read it.
    missing = [f"worker --{n}" for n in ("listen", "metrics-listen", "model", "drain-grace-seconds", "threads",
                                         "kv-cache-bytes", "max-batch-tokens", "max-num-seqs") if n not in wflags]
    missing += [f"gateway --{n}" for n in ("listen", "metrics-listen", "workers", "drain-grace-seconds")
                if n not in gflags]
    if not c.check(not missing, "the Deployments pass every flag these checks read", ", ".join(missing)):
        return
    check_worker(c, worker, wflags, objs, overlay)
    check_gateway(c, gateway, gflags, objs)

    # Services: selectors and ports agree with the pods and their flags.
    wsvc, gsvc = objs[("Service", "polar-worker")], objs[("Service", "polar-gateway")]
    c.check(wsvc["spec"].get("clusterIP") == "None", "Service polar-worker is headless (clusterIP: None)")
    c.check(not wsvc["spec"].get("publishNotReadyAddresses", False),
            "Service polar-worker publishes ready workers only (publishNotReadyAddresses false)")
    c.check(gsvc["spec"].get("clusterIP") != "None", "Service polar-gateway has a cluster IP")
    for svc, dep, flags in ((wsvc, worker, wflags), (gsvc, gateway, gflags)):
        name = f"Service/{svc['metadata']['name']}"
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        c.check(matches({"matchLabels": svc["spec"]["selector"]}, pod_labels),
                f"{name} selects the pods of Deployment/{dep['metadata']['name']}")
        others = [d for d in (worker, gateway) if d is not dep]
        c.check(not any(matches({"matchLabels": svc["spec"]["selector"]}, d["spec"]["template"]["metadata"]["labels"])
                        for d in others), f"{name} selects no other component's pods")
        ports = {p["name"]: p for p in svc["spec"]["ports"]}
        pod = dep["spec"]["template"]["spec"]
        listen = {"grpc": host_port(flags["listen"])[1], "metrics": host_port(flags["metrics-listen"])[1]}
        for pname, want in listen.items():
            p = ports.get(pname)
            if not c.check(p is not None, f"{name} has port {pname}"):
                continue
            target = container_port(pod, p.get("targetPort", p["port"]))
            c.check(target == want and p["port"] == want,
                    f"{name} port {pname} ({p['port']} -> {p.get('targetPort')}) reaches the process's {pname} "
                    f"listen port {want}", f"target resolves to {target}")

    # The gateway's --workers is the headless worker Service in this namespace.
    m = re.fullmatch(r"dns:///([^:/]+):([0-9]+)", gflags.get("workers", ""))
    if c.check(m is not None, "gateway --workers is dns:///NAME:PORT", gflags.get("workers")):
        host, port = m.group(1), int(m.group(2))
        c.check(host.endswith("."), f"gateway --workers host {host} is fully qualified (no search-domain lookups)")
        host = host.rstrip(".")
        domain = host.split(".svc.", 1)[1] if ".svc." in host else ""
        c.check(host == f"polar-worker.{worker['metadata']['namespace']}.svc.{domain}" and domain,
                f"gateway --workers host {host} is Service polar-worker in namespace "
                f"{worker['metadata']['namespace']}")
        c.check(port == next(p["port"] for p in wsvc["spec"]["ports"] if p["name"] == "grpc"),
                f"gateway --workers port {port} is polar-worker's grpc port")

    check_servicemonitor(c, objs, [wsvc, gsvc])
    check_networkpolicies(c, objs, worker, gateway)
    check_pdbs(c, objs, [worker, gateway])
    check_hpa(c, objs, worker)
    rule = objs[("PrometheusRule", "polar")]
    c.check(rule["spec"]["groups"] == rule_groups(),
            "PrometheusRule/polar carries the groups of deploy/prometheus/rules/*.yml unchanged")


def check_deployment(c, dep, labels, objs):
    name = f"Deployment/{dep['metadata']['name']}"
    template = dep["spec"]["template"]
    c.check(all(template["metadata"]["labels"].get(k) == v for k, v in labels.items()),
            f"{name} pods carry {labels}")
    c.check(matches(dep["spec"]["selector"], template["metadata"]["labels"]),
            f"{name} selector matches its pod template")
    pod = template["spec"]
    c.check(("ServiceAccount", pod.get("serviceAccountName")) in objs,
            f"{name} runs as a rendered ServiceAccount ({pod.get('serviceAccountName')})")
    c.check(pod.get("automountServiceAccountToken") is False, f"{name} mounts no API token")
    psc = pod.get("securityContext") or {}
    c.check(psc.get("runAsNonRoot") is True and psc.get("runAsUser") == UID,
            f"{name} pod runs as non-root uid {UID}")
    c.check((psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
            f"{name} pod uses the RuntimeDefault seccomp profile")
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    for v in volumes.values():
        if "persistentVolumeClaim" in v:
            claim = v["persistentVolumeClaim"]["claimName"]
            c.check(("PersistentVolumeClaim", claim) in objs, f"{name} volume {v['name']} claims a rendered PVC")
    for ctr in pod["containers"] + (pod.get("initContainers") or []):
        cname = f"{name} container {ctr['name']}"
        c.check(bool(ctr.get("image")), f"{cname} has an image")
        # A `:latest` tag without a policy means Always: a locally loaded
        # image (kind, minikube) would be pulled from a registry instead.
        c.check(ctr.get("imagePullPolicy") == "IfNotPresent", f"{cname} pulls its image only if not present")
        for probe in ("readinessProbe", "livenessProbe"):
            c.check(probe in ctr, f"{cname} has a {probe}")
        res = ctr.get("resources") or {}
        c.check({"cpu", "memory"} <= set(res.get("requests") or {}), f"{cname} requests cpu and memory")
        c.check("memory" in (res.get("limits") or {}), f"{cname} has a memory limit")
        if "memory" in (res.get("limits") or {}) and "memory" in (res.get("requests") or {}):
            c.check(quantity(res["requests"]["memory"]) <= quantity(res["limits"]["memory"]),
                    f"{cname} memory request <= limit")
        sc = ctr.get("securityContext") or {}
        c.check(sc.get("runAsNonRoot") is True and sc.get("runAsUser", psc.get("runAsUser")) == UID,
                f"{cname} runs as non-root uid {UID}")
        c.check(sc.get("readOnlyRootFilesystem") is True, f"{cname} has a read-only root filesystem")
        c.check(sc.get("allowPrivilegeEscalation") is False, f"{cname} cannot escalate privileges")
        c.check("ALL" in ((sc.get("capabilities") or {}).get("drop") or []), f"{cname} drops ALL capabilities")
        c.check(not (sc.get("capabilities") or {}).get("add"), f"{cname} adds no capabilities")
        for mount in ctr.get("volumeMounts") or []:
            c.check(mount["name"] in volumes, f"{cname} mount {mount['mountPath']} names a pod volume")
        env_ok = True
        try:
            args = expanded_args(dep, objs) if ctr is pod["containers"][0] else []
        except (ValueError, KeyError) as e:
            env_ok, args = False, []
            c.check(False, f"{cname} environment resolves", str(e))
        if env_ok:
            left = [a for a in args if re.search(r"\$\([A-Za-z_]", a)]
            c.check(not left, f"{cname} args reference only defined variables", str(left))


def probe_port(probe):
    for kind in ("grpc", "tcpSocket", "httpGet"):
        if kind in probe:
            return kind, probe[kind]["port"]
    return None, None


def check_worker(c, dep, flags, objs, overlay):
    pod = dep["spec"]["template"]["spec"]
    ctr = pod["containers"][0]
    grpc_port = host_port(flags["listen"])[1]
    c.check("replicas" not in dep["spec"],
            "Deployment/polar-worker leaves its replica count to the HorizontalPodAutoscaler")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        kind, port = probe_port(ctr.get(probe, {}))
        c.check(kind == "grpc" and container_port(pod, port) == grpc_port,
                f"worker {probe} asks grpc.health.v1 on the worker's --listen port {grpc_port}",
                f"{kind} on {port}")
    sp = ctr.get("startupProbe", {})
    budget = sp.get("periodSeconds", 10) * sp.get("failureThreshold", 3) + sp.get("initialDelaySeconds", 0)
    c.check(budget >= 300, f"worker startupProbe allows {budget} s for the model to load (>= 300)")
    grace = float(flags["drain-grace-seconds"])
    tgp = pod.get("terminationGracePeriodSeconds", 30)
    pre_stop = pre_stop_seconds(ctr)
    # The worker drains for --drain-grace-seconds, then takes up to 2 s to
    # shut its server down (services/worker/main.cc).
    c.check(pre_stop > 0, f"worker preStop waits {pre_stop:g} s for gateways to drop it from DNS")
    c.check(tgp > pre_stop + grace + 2,
            f"worker terminationGracePeriodSeconds {tgp} > preStop {pre_stop} s + drain grace {grace:g} s + 2 s")
    mounts = {m["mountPath"]: m for m in ctr.get("volumeMounts") or []}
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    models = mounts.get("/models")
    if c.check(models is not None and models.get("readOnly") is True, "worker mounts /models read-only"):
        c.check("persistentVolumeClaim" in volumes.get(models["name"], {}), "worker /models comes from a PVC")
    c.check(flags["model"].startswith("/models/"), f"worker --model {flags['model']} is on the /models volume")
    routers = mounts.get("/routers")
    c.check(routers is not None and routers.get("readOnly") is True, "worker mounts /routers read-only")
    for flag in ("routers", "mlp-routers"):
        c.check(flags.get(flag, "") == "" or flags[flag].startswith(("/routers/", "/models/")),
                f"worker --{flag} is empty or on a mounted volume", flags.get(flag))
    c.check(flags.get("device") == "cpu", "worker --device is cpu (the only device polar-worker has today)")
    res = ctr["resources"]
    threads = int(flags["threads"])
    cpu = quantity(res["requests"]["cpu"])
    c.check(threads >= 1 and threads == cpu,
            f"worker --threads {threads} equals its CPU request ({res['requests']['cpu']})")
    kv = int(flags["kv-cache-bytes"])
    c.check(quantity(res["limits"]["memory"]) > kv,
            f"worker memory limit {res['limits']['memory']} holds --kv-cache-bytes {kv}")
    c.check(int(flags["max-batch-tokens"]) >= 1 and int(flags["max-num-seqs"]) >= 1,
            "worker --max-batch-tokens and --max-num-seqs are positive")
    gpus = res.get("limits", {}).get("nvidia.com/gpu")
    if overlay == "gpu":
        c.check(gpus is not None and int(gpus) == 1, "gpu overlay: each worker has nvidia.com/gpu: 1")
        c.check(any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations") or []),
                "gpu overlay: workers tolerate the nvidia.com/gpu taint")
    else:
        c.check(gpus is None, f"{overlay} overlay: workers ask for no GPU")
    if overlay == "cpu-dev":
        for r in ("cpu", "memory"):
            c.check(r in res.get("limits", {}) and quantity(res["requests"][r]) == quantity(res["limits"][r]),
                    f"cpu-dev overlay: worker {r} request equals its limit (Guaranteed QoS)")


def pre_stop_seconds(ctr):
    """Seconds a `sleep N` preStop hook takes (0 without one)."""
    hook = (ctr.get("lifecycle") or {}).get("preStop")
    if not hook:
        return 0
    cmd = hook.get("exec", {}).get("command") or []
    if len(cmd) == 2 and cmd[0] == "sleep":
        return float(cmd[1])
    if "sleep" in hook:
        return float(hook["sleep"]["seconds"])
    raise ValueError(f"preStop hook {hook} not understood by this test")


def check_gateway(c, dep, flags, objs):
    pod = dep["spec"]["template"]["spec"]
    ctr = pod["containers"][0]
    grpc_port = host_port(flags["listen"])[1]
    c.check(dep["spec"].get("replicas", 1) >= 2, "Deployment/polar-gateway runs at least 2 replicas")
    spread = pod.get("topologySpreadConstraints") or []
    anti = ((pod.get("affinity") or {}).get("podAntiAffinity") or {})
    terms = [t.get("podAffinityTerm", t) for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])]
    terms += anti.get("requiredDuringSchedulingIgnoredDuringExecution", [])
    labels = dep["spec"]["template"]["metadata"]["labels"]
    c.check(any(t["topologyKey"] == "kubernetes.io/hostname" and matches(t["labelSelector"], labels)
                for t in terms + spread),
            "gateway replicas are kept apart across nodes (anti-affinity or topology spread on hostname)")
    kind, port = probe_port(ctr.get("readinessProbe", {}))
    c.check(kind == "grpc" and container_port(pod, port) == grpc_port,
            f"gateway readinessProbe asks grpc.health.v1 on --listen port {grpc_port}")
    kind, port = probe_port(ctr.get("livenessProbe", {}))
    # The gateway's health is NOT_SERVING while no worker is ready: a liveness
    # probe on it would restart healthy gateways whenever workers load.
    c.check(kind is not None and kind != "grpc",
            "gateway livenessProbe does not use gRPC health (which follows worker readiness)", kind)
    grace = float(flags["drain-grace-seconds"])
    pre_stop = pre_stop_seconds(ctr)
    tgp = pod.get("terminationGracePeriodSeconds", 30)
    c.check(pre_stop > 0, f"gateway preStop waits {pre_stop:g} s for endpoint removal to spread")
    c.check(tgp > pre_stop + grace,
            f"gateway terminationGracePeriodSeconds {tgp} > preStop {pre_stop:g} s + drain grace {grace:g} s")
    for flag in ("max-queue", "max-batch", "default-max-tokens", "dns-refresh-seconds"):
        c.check(flag in flags and int(flags[flag]) >= (0 if flag == "max-queue" else 1),
                f"gateway --{flag} is set ({flags.get(flag)})")


def check_servicemonitor(c, objs, services):
    sm = objs[("ServiceMonitor", "polar")]
    selected = [s for s in objs.values() if s["kind"] == "Service"
                and matches(sm["spec"]["selector"], s["metadata"].get("labels") or {})]
    names = {s["metadata"]["name"] for s in selected}
    c.check({"polar-worker", "polar-gateway"} <= names,
            "ServiceMonitor/polar selects Services polar-worker and polar-gateway", str(sorted(names)))
    for ep in sm["spec"]["endpoints"]:
        for svc in services:
            c.check(ep.get("port") in {p["name"] for p in svc["spec"]["ports"]},
                    f"ServiceMonitor endpoint port {ep.get('port')} exists on Service/{svc['metadata']['name']}")
        c.check(ep.get("path", "/metrics") == "/metrics", "ServiceMonitor scrapes /metrics")
    # Prometheus names the job after the Service (no jobLabel): the rules and
    # dashboards under deploy/ use the job names of deploy/prometheus/prometheus.yml.
    c.check("jobLabel" not in sm["spec"], "ServiceMonitor keeps the Service name as the job label")
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"] for j in prom.get("scrape_configs", []) if j["job_name"].startswith("polar")}
    c.check(bool(jobs) and jobs <= names,
            f"job names of deploy/prometheus/prometheus.yml {sorted(jobs)} are ServiceMonitor job names")


def policies_for(objs, labels):
    return [o for o in objs.values() if o["kind"] == "NetworkPolicy"
            and matches(o["spec"]["podSelector"], labels)]


def allowed_ports(rule, pod_spec):
    """Container ports an ingress rule opens (all of the pod's when it lists none)."""
    if not rule.get("ports"):
        return {p["containerPort"] for ctr in pod_spec["containers"] for p in ctr.get("ports") or []}
    return {container_port(pod_spec, p["port"]) for p in rule["ports"]}


def is_prometheus_peer(peer):
    return ("namespaceSelector" in peer and "podSelector" in peer
            and (peer["podSelector"].get("matchLabels") or {}).get("app.kubernetes.io/name") == "prometheus")


def check_networkpolicies(c, objs, worker, gateway):
    wpod, gpod = worker["spec"]["template"]["spec"], gateway["spec"]["template"]["spec"]
    wlabels, glabels = worker["spec"]["template"]["metadata"]["labels"], gateway["spec"]["template"]["metadata"]["labels"]
    wgrpc, wmetrics = container_port(wpod, "grpc"), container_port(wpod, "metrics")
    ggrpc, gmetrics = container_port(gpod, "grpc"), container_port(gpod, "metrics")

    wpols = policies_for(objs, wlabels)
    c.check(wpols and all("Ingress" in p["spec"].get("policyTypes", ["Ingress"]) for p in wpols),
            "worker pods are selected by an ingress NetworkPolicy")
    rules = [r for p in wpols for r in p["spec"].get("ingress") or []]
    c.check(all(r.get("from") for r in rules), "no worker ingress rule is open to every source")
    for r in rules:
        ports = allowed_ports(r, wpod)
        for peer in r.get("from") or []:
            if wgrpc in ports:
                c.check(set(peer) == {"podSelector"} and matches(peer["podSelector"], glabels)
                        and not matches(peer["podSelector"], wlabels),
                        f"worker gRPC port {wgrpc} is open to gateway pods of this namespace only", str(peer))
            if wmetrics in ports:
                c.check(is_prometheus_peer(peer) or (set(peer) == {"podSelector"} and matches(peer["podSelector"], glabels)),
                        f"worker metrics port {wmetrics} is open to Prometheus", str(peer))
    c.check(any(wgrpc in allowed_ports(r, wpod) and any(matches(p.get("podSelector", {"matchLabels": {"x": "y"}}), glabels)
                                                        for p in r.get("from") or []) for r in rules),
            f"gateways may reach the workers' gRPC port {wgrpc}")
    c.check(any(wmetrics in allowed_ports(r, wpod) and any(is_prometheus_peer(p) for p in r.get("from") or []) for r in rules),
            f"Prometheus may reach the workers' metrics port {wmetrics}")

    gpols = policies_for(objs, glabels)
    grules = [r for p in gpols for r in p["spec"].get("ingress") or []]
    c.check(any(not r.get("from") and allowed_ports(r, gpod) == {ggrpc} for r in grules),
            f"clients may reach the gateways' gRPC port {ggrpc} from anywhere")
    c.check(all(gmetrics not in allowed_ports(r, gpod) or (r.get("from") and all(is_prometheus_peer(p) for p in r["from"]))
                for r in grules), f"the gateways' metrics port {gmetrics} is open to Prometheus only")
    egress = [r for p in gpols if "Egress" in p["spec"].get("policyTypes", []) for r in p["spec"].get("egress") or []]
    if egress:
        c.check(any(any(matches(t.get("podSelector", {"matchLabels": {"x": "y"}}), wlabels) for t in r.get("to") or [])
                    and {p["port"] for p in r.get("ports") or []} & {wgrpc, "grpc"} for r in egress),
                f"gateway egress allows the workers' gRPC port {wgrpc}")
        c.check(any(any(p["port"] == 53 for p in r.get("ports") or []) for r in egress),
                "gateway egress allows DNS (port 53)")


def check_pdbs(c, objs, deployments):
    pdbs = [o for o in objs.values() if o["kind"] == "PodDisruptionBudget"]
    hpa = objs[("HorizontalPodAutoscaler", "polar-worker")]
    for dep in deployments:
        labels = dep["spec"]["template"]["metadata"]["labels"]
        mine = [p for p in pdbs if matches(p["spec"]["selector"], labels)]
        name = dep["metadata"]["name"]
        if not c.check(len(mine) == 1, f"one PodDisruptionBudget covers Deployment/{name}"):
            continue
        spec = mine[0]["spec"]
        replicas = hpa["spec"]["minReplicas"] if name == "polar-worker" else dep["spec"].get("replicas", 1)
        allows_eviction = (int(spec.get("maxUnavailable", 0)) >= 1
                           or ("minAvailable" in spec and int(spec["minAvailable"]) < replicas))
        c.check(allows_eviction, f"PodDisruptionBudget of {name} lets a node drain proceed ({spec})")


def check_hpa(c, objs, worker):
    hpa = objs[("HorizontalPodAutoscaler", "polar-worker")]
    ref = hpa["spec"]["scaleTargetRef"]
    c.check(ref["kind"] == "Deployment" and ref["name"] == worker["metadata"]["name"],
            "HorizontalPodAutoscaler scales Deployment/polar-worker")
    c.check(1 <= hpa["spec"].get("minReplicas", 1) <= hpa["spec"]["maxReplicas"], "HPA min <= max replicas")
    names = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    c.check(bool(names) and len(names) == len(hpa["spec"]["metrics"]),
            "HPA scales on per-pod custom metrics only", str(hpa["spec"]["metrics"]))
    adapter = yaml.safe_load((K8S / "monitoring/prometheus-adapter-values.yaml").read_text())
    rules = adapter["rules"]["custom"]
    worker_sources = "".join(p.read_text() for p in (ROOT / "services/worker").glob("*.cc"))
    for name in names:
        rule = [r for r in rules if r["name"].get("as") == name]
        if not c.check(len(rule) == 1, f"prometheus-adapter-values.yaml has one rule exposing {name}"):
            continue
        series = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)", rule[0]["seriesQuery"]).group(1)
        c.check(series == name and re.fullmatch(rule[0]["name"]["matches"], series) is not None,
                f"adapter rule for {name} reads the series {name}", series)
        c.check('job="polar-worker"' in rule[0]["seriesQuery"], f"adapter rule for {name} reads job polar-worker")
        overrides = rule[0]["resources"]["overrides"]
        c.check(overrides.get("pod", {}).get("resource") == "pod"
                and overrides.get("namespace", {}).get("resource") == "namespace",
                f"adapter rule for {name} maps the pod and namespace labels")
        c.check("<<.GroupBy>>" in rule[0]["metricsQuery"] and "<<.LabelMatchers>>" in rule[0]["metricsQuery"],
                f"adapter rule for {name} groups per pod")
        c.check(f'"{name}"' in worker_sources, f"{name} is a metric polar-worker registers (services/worker)")


# ------------------------------------------------------------------- rules

def rule_files():
    d = ROOT / "deploy/prometheus/rules"
    return sorted(d.glob("*.yml")) + sorted(d.glob("*.yaml"))


def rule_groups():
    return [g for path in rule_files() for g in yaml.safe_load(path.read_text())["groups"]]


def cmd_rules(c):
    c.check(bool(rule_files()), "deploy/prometheus/rules has rule files",
            "the PrometheusRule is generated from them")
    proc = subprocess.run([sys.executable, str(K8S / "tools/gen-prometheusrule"), "--check"],
                          capture_output=True, text=True)
    sys.stdout.write(proc.stdout + proc.stderr)
    c.check(proc.returncode == 0, "k8s/base/prometheusrule.yaml is up to date (k8s/tools/gen-prometheusrule --check)")
    generated = yaml.safe_load((K8S / "base/prometheusrule.yaml").read_text())
    c.check(generated["spec"]["groups"] == rule_groups(),
            "k8s/base/prometheusrule.yaml's groups equal deploy/prometheus/rules/*.yml's")
    names = [g["name"] for g in generated["spec"]["groups"]]
    c.check(len(names) == len(set(names)), "rule group names are unique", str(names))


# ---------------------------------------------------------------- run test

class Process:
    """A started binary whose output lines are collected by reader threads."""

    def __init__(self, argv, env=None):
        print("start " + " ".join(argv))
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env, start_new_session=True)
        self.lines, self.lock = [], threading.Lock()
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream):
        for line in stream:
            with self.lock:
                self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for line in self.lines:
                    m = re.search(pattern, line)
                    if m:
                        return m
            if self.proc.poll() is not None:
                time.sleep(0.2)  # let the readers finish
                with self.lock:
                    found = [re.search(pattern, l) for l in self.lines]
                return next((m for m in found if m), None)
            time.sleep(0.05)
        return None

    def output(self):
        with self.lock:
            return "\n".join(self.lines[-20:])

    def stop(self, timeout):
        """SIGTERM; the exit status and seconds taken, or None past `timeout`."""
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
            return code, time.monotonic() - start
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None, timeout

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def local_args(args, replace):
    """The rendered args with some flags' values replaced (by flag name)."""
    out = []
    for a in args:
        name = a[2:].split("=", 1)[0]
        out.append(f"--{name}={replace[name]}" if name in replace else a)
    return out


def cmd_run(c, overlay, worker_bin, gateway_bin, polar_bin, model):
    objects = render(overlay)
    objs = index(objects)
    worker, gateway = objs[("Deployment", "polar-worker")], objs[("Deployment", "polar-gateway")]
    wargs, gargs = expanded_args(worker, objs), expanded_args(gateway, objs)
    wflags = flags_of(wargs)
    model = pathlib.Path(model)
    c.check(pathlib.PurePosixPath(wflags["model"]).name == model.name,
            f"the rendered --model names the default model ({model.name})", wflags["model"])
    local_model = str(model.parent / pathlib.PurePosixPath(wflags["model"]).relative_to("/models"))
    env = dict(os.environ, OMP_WAIT_POLICY="passive")
    processes = []
    try:
        w = Process([worker_bin] + local_args(wargs, {"listen": "127.0.0.1:0", "metrics-listen": "127.0.0.1:0",
                                                      "model": local_model}), env)
        processes.append(w)
        m = w.wait_for(r"listening grpc=\S+:(\d+) metrics=\S+:(\d+)", 120)
        if not c.check(m is not None, "polar-worker accepts the rendered flags and listens", w.output()):
            return
        wgrpc, wmetrics = int(m.group(1)), int(m.group(2))
        c.check(w.wait_for(r"polar-worker: ready", 300) is not None, "polar-worker finishes its warm-up step",
                w.output())
        rss = rss_bytes(w.proc.pid)
        limit = quantity(worker["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"])
        kv = int(wflags["kv-cache-bytes"])
        c.check(rss + kv <= limit,
                f"worker memory limit {limit / 2**20:.0f} MiB holds its resident size once ready "
                f"({rss / 2**20:.0f} MiB) plus a full KV cache ({kv / 2**20:.0f} MiB)")

        g = Process([gateway_bin] + local_args(gargs, {"listen": "127.0.0.1:0", "metrics-listen": "127.0.0.1:0",
                                                       "workers": f"127.0.0.1:{wgrpc}"}), env)
        processes.append(g)
        m = g.wait_for(r"listening grpc=\S+:(\d+) metrics=\S+:(\d+)", 60)
        if not c.check(m is not None, "polar-gateway accepts the rendered flags and listens", g.output()):
            return
        ggrpc = int(m.group(1))
        text, deadline = None, time.monotonic() + 60
        while time.monotonic() < deadline:
            proc = subprocess.run([polar_bin, "generate", "--target", f"127.0.0.1:{ggrpc}", "--max-tokens", "8",
                                   "--temperature", "0", "--chat", "Name one colour."],
                                  capture_output=True, text=True, timeout=60)
            if proc.returncode == 0 and proc.stdout.strip():
                text = proc.stdout.strip()
                break
            time.sleep(0.5)  # the gateway polls its worker every 200 ms before it is ready
        c.check(text is not None, "a completion streams through the gateway and worker", proc.stderr[-500:])
        if text is not None:
            print(f"      completion: {text!r}")

        sm = objs[("ServiceMonitor", "polar")]
        path = sm["spec"]["endpoints"][0].get("path", "/metrics")
        body = urllib.request.urlopen(f"http://127.0.0.1:{wmetrics}{path}", timeout=10).read().decode()
        exported = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{| )", body, re.M))
        hpa = objs[("HorizontalPodAutoscaler", "polar-worker")]
        for metric in (m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"):
            c.check(metric in exported, f"the worker's {path} exports {metric}, which the HPA scales on")

        gtgp = gateway["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
        gpre = pre_stop_seconds(gateway["spec"]["template"]["spec"]["containers"][0])
        code, took = g.stop(gtgp - gpre)
        c.check(code == 0, f"polar-gateway exits 0 on SIGTERM within its grace ({took:.1f} s of {gtgp - gpre:g} s "
                           f"after preStop)", f"exit {code}; {g.output()}")
        wtgp = worker["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
        code, took = w.stop(wtgp)
        c.check(code == 0, f"polar-worker drains and exits 0 on SIGTERM within its grace ({took:.1f} s of {wtgp} s)",
                f"exit {code}; {w.output()}")
    finally:
        for p in processes:
            p.kill()


def rss_bytes(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("render")
    p.add_argument("overlay")
    sub.add_parser("rules")
    p = sub.add_parser("run")
    p.add_argument("overlay")
    for flag in ("--worker", "--gateway", "--polar", "--model"):
        p.add_argument(flag, required=True)
    args = parser.parse_args()
    c = Checks()
    if args.command == "render":
        objects = render(args.overlay)
        validate_schemas(c, objects, args.overlay)
        loader = [o for o in yaml.safe_load_all((K8S / "tools/model-loader.yaml").read_text()) if o]
        validate_schemas(c, loader, "k8s/tools/model-loader.yaml")
        for pod in loader:
            for ctr in pod["spec"]["containers"]:
                c.check(ctr.get("imagePullPolicy") == "IfNotPresent",
                        f"model-loader container {ctr['name']} pulls its image only if not present")
        check_objects(c, objects, args.overlay)
    elif args.command == "rules":
        cmd_rules(c)
    else:
        for path in (args.worker, args.gateway, args.polar, args.model):
            if not os.path.exists(path):
                print(f"SKIP: {path} does not exist (build the binaries; scripts/fetch-model)")
                return 77
        cmd_run(c, args.overlay, args.worker, args.gateway, args.polar, args.model)
    return c.finish()


if __name__ == "__main__":
    sys.exit(main())
