"""Checks of deploy/compose.yaml that need no container engine.

`docker compose config` would need the compose plugin, which is not installed
where Polar is tested, so this reads the file with PyYAML (anchors and merge
keys resolved as compose resolves them) and checks its wiring:

- services_and_profiles: a gateway, Prometheus and Grafana in no profile;
  at least two workers in the cpu profile and two in the gpu profile, each
  built from deploy/worker.Dockerfile; every gpu worker reserves its own NVIDIA
  GPU and no cpu worker reserves one; images of services without a build are
  pinned to a tag.
- discovery: every worker carries the network alias the gateway's
  --workers dns:///NAME:PORT resolves, on the port the workers listen on;
  prometheus.yml discovers the gateway and the workers by those names on
  their metrics ports.
- commands: every flag in the gateway's and the workers' commands is one the
  binary accepts (variables at their defaults); the worker's --model default
  is the file scripts/fetch-model fetches.
- mounts: every bind-mounted host path exists, except the model cache, which
  must be the directory scripts/fetch-model fills; Prometheus loads
  deploy/prometheus/prometheus.yml; Grafana gets the provisioning directory
  and the dashboards where the provisioning file looks for them, and its
  datasource points at the Prometheus service.
- interpolation: every ${VAR} has a default, so `up` works without an .env.

Run through scripts/run-python-test (PyYAML from tests/python-requirements.txt, installed by scripts/install-deps) (ctest: obs_compose).
Environment: POLAR_BIN_DIR, POLAR_DEFAULT_MODEL. Exits 77 when the binaries
are not built.
"""

import glob
import os
import re
import sys

import yaml

import obs_lib
from obs_lib import DEPLOY, ROOT, Checks

COMPOSE = os.path.join(DEPLOY, "compose.yaml")
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def load():
    with open(COMPOSE) as f:
        return yaml.safe_load(f)


def interpolate(value):
    """${VAR:-default} -> default, as compose does with VAR unset."""
    if isinstance(value, str):
        return VARIABLE.sub(lambda m: m.group(2) or "", value)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


def host_path(path):
    return os.path.normpath(os.path.join(DEPLOY, path))


def workers(compose):
    result = {}
    for name, service in compose["services"].items():
        build = service.get("build") or {}
        if isinstance(build, dict) and build.get("dockerfile", "").endswith("worker.Dockerfile"):
            result[name] = service
    return result


def argv_value(argv, flag):
    assert flag in argv, f"{flag} missing from {argv}"
    return argv[argv.index(flag) + 1]


def gpu_devices(service):
    devices = (service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", []))
    return [d for d in devices if d.get("driver") == "nvidia" or "gpu" in d.get("capabilities", [])]


def services_and_profiles():
    compose = interpolate(load())
    services = compose["services"]
    for name in ("gateway", "prometheus", "grafana"):
        assert name in services, f"no {name} service"
        assert not services[name].get("profiles"), f"{name} must start in every profile"
    ws = workers(compose)
    by_profile = {}
    for name, service in ws.items():
        for profile in service.get("profiles", []):
            by_profile.setdefault(profile, []).append(name)
    assert len(by_profile.get("cpu", [])) >= 2, f"cpu profile workers: {by_profile.get('cpu')}"
    assert len(by_profile.get("gpu", [])) >= 2, f"gpu profile workers: {by_profile.get('gpu')}"
    gpu_ids = []
    for name in by_profile["gpu"]:
        devices = gpu_devices(ws[name])
        assert devices and all(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), \
            f"{name}: no NVIDIA GPU reservation"
        for d in devices:
            assert "device_ids" in d or "count" in d, f"{name}: reserve device_ids or a count"
            gpu_ids += d.get("device_ids", [])
    assert len(gpu_ids) == len(set(gpu_ids)), f"gpu workers share GPUs: {gpu_ids}"
    for name in by_profile["cpu"]:
        assert not gpu_devices(ws[name]), f"{name}: a cpu worker reserves a GPU"
    for name, service in services.items():
        build = service.get("build")
        if build:
            context = host_path(build["context"])
            assert os.path.isfile(os.path.join(context, build["dockerfile"])), f"{name}: no {build['dockerfile']}"
            assert os.path.isfile(os.path.join(context, ".dockerignore")), f"{name}: context has no .dockerignore"
        else:
            image = service["image"]
            assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag ({image})"
    print(f"  cpu: {', '.join(by_profile['cpu'])}; gpu: {', '.join(by_profile['gpu'])} (GPUs {gpu_ids})",
          flush=True)


def discovery():
    compose = interpolate(load())
    gateway = compose["services"]["gateway"]["command"]
    spec = argv_value(gateway, "--workers")
    match = re.fullmatch(r"dns:///([^:]+):(\d+)", spec)
    assert match, f"the gateway should find workers by DNS through compose's resolver, not {spec}"
    dns_name, port = match.groups()
    assert "--dns-server" not in gateway, "--dns-server overrides /etc/resolv.conf (compose's 127.0.0.11)"
    worker_metrics_ports = set()
    for name, service in workers(compose).items():
        aliases = service.get("networks", {}).get("default", {}).get("aliases", [])
        assert dns_name in aliases, f"{name}: no network alias {dns_name} (the gateway resolves {spec})"
        assert argv_value(service["command"], "--listen").rsplit(":", 1)[1] == port, f"{name}: not on port {port}"
        worker_metrics_ports.add(argv_value(service["command"], "--metrics-listen").rsplit(":", 1)[1])
    gateway_metrics_port = argv_value(gateway, "--metrics-listen").rsplit(":", 1)[1]

    prom = compose["services"]["prometheus"]
    config_flag = next(a for a in prom["command"] if a.startswith("--config.file="))
    config = mounted_host_file(prom, config_flag.split("=", 1)[1])
    with open(config) as f:
        scrape = {job["job_name"]: job for job in yaml.safe_load(f)["scrape_configs"]}
    expected = {"polar-gateway": ("gateway", gateway_metrics_port),
                "polar-worker": (dns_name, worker_metrics_ports.pop())}
    assert not worker_metrics_ports, "workers expose metrics on different ports"
    for job, (name, metrics_port) in expected.items():
        assert job in scrape, f"prometheus.yml has no job {job}"
        sd = scrape[job].get("dns_sd_configs", [])
        assert any(name in c.get("names", []) and str(c.get("port")) == metrics_port for c in sd), \
            f"prometheus.yml job {job} should discover {name} on port {metrics_port}: {scrape[job]}"
    assert "gateway" in compose["services"], "the DNS name gateway is the gateway service"
    print(f"  gateway --workers {spec}; Prometheus finds gateway:{gateway_metrics_port} and "
          f"{dns_name}:{expected['polar-worker'][1]}", flush=True)


def mounted_host_file(service, container_path):
    """The host file behind `container_path` through the service's bind mounts."""
    for volume in service.get("volumes", []):
        parts = volume.split(":")
        if len(parts) >= 2 and parts[0].startswith("."):
            source, target = parts[0], parts[1]
            if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
                return host_path(source) + container_path[len(target):]
    raise AssertionError(f"{container_path} is not bind-mounted from the repository")


def commands(bin_dir, default_model):
    compose = interpolate(load())
    obs_lib.check_flags(os.path.join(bin_dir, "polar-gateway"), compose["services"]["gateway"]["command"],
                        "compose gateway")
    for name, service in workers(compose).items():
        argv = service["command"]
        obs_lib.check_flags(os.path.join(bin_dir, "polar-worker"), argv, f"compose {name}")
        model = argv_value(argv, "--model")
        assert os.path.basename(model) == os.path.basename(default_model), \
            f"{name}: --model {model}, but scripts/fetch-model fetches {os.path.basename(default_model)}"
        models_dir = mounted_host_file(service, os.path.dirname(model))
        assert os.path.normpath(models_dir) == os.path.dirname(os.path.abspath(default_model)), \
            f"{name}: {os.path.dirname(model)} is mounted from {models_dir}, not the model cache"
    print("  every flag is accepted; the workers load the fetched default model", flush=True)


def mounts(default_model):
    compose = interpolate(load())
    model_cache = os.path.dirname(os.path.abspath(default_model))
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith("."):
                assert source in compose.get("volumes", {}), f"{name}: volume {source} is not declared"
                continue
            path = host_path(source)
            assert os.path.exists(path) or path == model_cache, f"{name}: {source} ({path}) does not exist"
            if path.startswith(ROOT + "/.cache"):
                assert volume.endswith(":ro"), f"{name}: mount the model cache read-only"
    grafana = compose["services"]["grafana"]
    provisioning = mounted_host_file(grafana, "/etc/grafana/provisioning")
    assert os.path.normpath(provisioning) == os.path.join(DEPLOY, "grafana", "provisioning")
    providers = []
    for path in glob.glob(os.path.join(provisioning, "dashboards", "*.yml")):
        with open(path) as f:
            providers += yaml.safe_load(f)["providers"]
    assert providers, "no dashboard provider"
    for provider in providers:
        folder = mounted_host_file(grafana, provider["options"]["path"])
        assert glob.glob(os.path.join(folder, "*.json")), f"provider {provider['name']}: no dashboards in {folder}"
    datasources = []
    for path in glob.glob(os.path.join(provisioning, "datasources", "*.yml")):
        with open(path) as f:
            datasources += yaml.safe_load(f)["datasources"]
    prometheus = [d for d in datasources if d["type"] == "prometheus"]
    assert prometheus, "no Prometheus datasource"
    host = re.match(r"https?://([^:/]+)", prometheus[0]["url"]).group(1)
    assert host in compose["services"], f"the datasource points at {host}, not a compose service"
    print(f"  mounts exist; Grafana provisions {len(providers)} dashboard folder(s) and datasource "
          f"{prometheus[0]['url']}", flush=True)


def interpolation():
    with open(COMPOSE) as f:
        text = f.read()
    bare = [m.group(0) for m in re.finditer(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", text)]
    assert not bare, f"variables without a default: {bare}"


def main():
    bin_dir = os.environ.get("POLAR_BIN_DIR", os.path.join(ROOT, "build", "bin"))
    default_model = os.environ.get("POLAR_DEFAULT_MODEL",
                                   os.path.join(ROOT, ".cache", "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    for binary in ("polar-worker", "polar-gateway"):
        if not os.access(os.path.join(bin_dir, binary), os.X_OK):
            obs_lib.skip(f"{binary} is not built in {bin_dir} (scripts/build)")
    checks = Checks()
    checks.run("services_and_profiles", services_and_profiles)
    checks.run("discovery", discovery)
    checks.run("commands", commands, bin_dir, default_model)
    checks.run("mounts", mounts, default_model)
    checks.run("interpolation", interpolation)
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
