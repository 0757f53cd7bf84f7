"""Every Grafana dashboard query returns data from a real Prometheus.

Issue 6's acceptance for the dashboards: a query that returns nothing is a
broken panel. Starts on loopback:
- polar-worker A: the default model, head routers (random weights: this
  checks the plumbing, as tests/integration/worker_test.cc does; written here
  in the file format of engine/model/head_routers.h, default density 0.5) and
  --per-head-metrics, behind
- polar-gateway, and
- polar-worker B: the tiny OPT test model (tests/data/models/tiny-opt) with
  random MLP routers (engine/model/mlp_sparsity.h's format, a quarter of the
  neurons per layer), driven straight through polar.v1.Worker with token ids
  (it has no tokenizer, which a gateway needs);
then Debian's Prometheus with the project's own deploy/prometheus/prometheus.yml
(its service discovery replaced by the test's ports, scrape and evaluation
every second) and rule files. It sends a short load: completions through the
gateway at the routers' default density, an invalid request, and sparse
requests to worker B; then, with a trickle of the same load still running,
runs every variable query (label_values) and every panel query of both
dashboards, Grafana's variables substituted (tests/deploy/obs_lib.py). Each
must return a series with a finite value within a deadline. Finally it checks
that the sparsity panels show sparsity (densities below 1) and that all
processes exit 0 on SIGTERM.

Run through scripts/run-python-test (PyYAML from tests/python-requirements.txt, installed by scripts/install-deps) (ctest: obs_dashboard_queries).
Environment: POLAR_BIN_DIR, POLAR_DEFAULT_MODEL, POLAR_TEST_DATA_DIR,
PROMETHEUS (default /usr/bin/prometheus). Exits 77 when the model, the
binaries, the test model or Prometheus are missing.
"""

import array
import json
import math
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time

import grpc
import yaml

from polar.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, worker_pb2, worker_pb2_grpc

from python_client_test import Process, check_prerequisites, field, metric_value, scrape, skip
from prometheus_scrape_test import Prometheus, wait_until

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deploy"))
import obs_lib  # noqa: E402
from obs_lib import Checks  # noqa: E402

QUERY_DEADLINE_SECONDS = 45  # for the first samples of the recording rules to appear
HEAD_DENSITY = 0.5


# ---- router files (safetensors: u64 header length, JSON header, F32 data) ----

def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, shape, values in tensors:
        blob = array.array("f", values).tobytes()
        if sys.byteorder != "little":
            raise RuntimeError("little-endian hosts only")
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def model_facts(polar, model):
    """layers, hidden size, query heads, KV heads from `polar model info`."""
    out = subprocess.run([polar, "model", "info", model], capture_output=True, text=True, timeout=120, check=True)
    text = out.stdout
    layers = int(re.search(r"^layers:\s+(\d+)", text, re.M).group(1))
    hidden = int(re.search(r"^hidden size:\s+(\d+)", text, re.M).group(1))
    heads = re.search(r"^attention heads:\s+(\d+) query, (\d+) key/value", text, re.M)
    return layers, hidden, int(heads.group(1)), int(heads.group(2))


def write_head_routers(path, layers, hidden, heads, kv_heads, seed=1):
    rng = random.Random(seed)
    tensors = []
    for layer in range(1, layers):  # layer 0 stays dense, as calibration keeps it
        tensors.append((f"layers.{layer}.weight", [heads, hidden], [rng.gauss(0, 0.05) for _ in range(heads * hidden)]))
        tensors.append((f"layers.{layer}.bias", [heads], [rng.gauss(0, 0.05) for _ in range(heads)]))
    write_safetensors(path, tensors, {
        "polar.head_routers": "1", "num_layers": str(layers), "hidden_size": str(hidden),
        "num_heads": str(heads), "num_kv_heads": str(kv_heads), "group_score": "max",
        "dense_layers": "[0]", "default_density": str(HEAD_DENSITY)})


def write_mlp_routers(path, config, rank=8, seed=2):
    layers, hidden, ffn = config["num_hidden_layers"], config["hidden_size"], config["ffn_dim"]
    buckets = [1, 4, 8, 16, 32, 64, 128]
    rng = random.Random(seed)
    tensors = []
    for layer in range(layers):
        tensors.append((f"layers.{layer}.down", [rank, hidden], [rng.gauss(0, 0.1) for _ in range(rank * hidden)]))
        tensors.append((f"layers.{layer}.up", [ffn, rank], [rng.gauss(0, 0.1) for _ in range(ffn * rank)]))
        tensors.append((f"layers.{layer}.bias", [ffn], [rng.gauss(0, 0.1) for _ in range(ffn)]))
    write_safetensors(path, tensors, {
        "polar.mlp_routers": "1", "num_layers": str(layers), "hidden_size": str(hidden), "ffn_size": str(ffn),
        "rank": str(rank), "batch_buckets": json.dumps(buckets),
        "neurons": json.dumps([[ffn // 4] * len(buckets) for _ in range(layers)])})


# ---- services ----

def start_worker(bin_dir, log_dir, name, args):
    process = Process([os.path.join(bin_dir, "polar-worker"), "--listen", "127.0.0.1:0",
                       "--metrics-listen", "127.0.0.1:0", "--threads", "1"] + args, log_dir, name)
    line = process.wait_for_line("polar-worker listening", 300)
    return process, field(line, "grpc"), field(line, "metrics")


def project_prometheus_config(targets):
    """deploy/prometheus/prometheus.yml as text, its targets replaced by
    `targets` ({job: [host:port]}), intervals set to 1 s and the rule files'
    paths made absolute."""
    source = os.path.join(obs_lib.DEPLOY, "prometheus", "prometheus.yml")
    with open(source) as f:
        config = yaml.safe_load(f)
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [os.path.normpath(os.path.join(os.path.dirname(source), p))
                            for p in config["rule_files"]]
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] not in targets:
            continue  # Prometheus's own job
        for key in [k for k in job if k.endswith("_sd_configs") or k == "static_configs"]:
            del job[key]
        job["static_configs"] = [{"targets": targets[job["job_name"]]}]
        jobs.append(job)
    missing = set(targets) - {j["job_name"] for j in jobs}
    if missing:
        raise AssertionError(f"prometheus.yml has no job {sorted(missing)}")
    config["scrape_configs"] = jobs
    return yaml.safe_dump(config)


# ---- load ----

class Load:
    """Completions through the gateway (default density, i.e. the routers'
    0.5), one invalid request per round, and sparse token-id requests straight
    to the OPT worker."""

    def __init__(self, gateway_address, opt_worker_address):
        self.gateway_channel = grpc.insecure_channel(gateway_address)
        self.gateway = gateway_pb2_grpc.GatewayStub(self.gateway_channel)
        self.opt_channel = grpc.insecure_channel(opt_worker_address)
        self.opt_worker = worker_pb2_grpc.WorkerStub(self.opt_channel)
        self.errors = []
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = None

    def _completion(self, i):
        request = gateway_pb2.GenerateRequest(text=f"Write a list of fruits, number {i}:", max_tokens=12)
        request.sampling.temperature = 0.0
        try:
            if i % 2:
                response = self.gateway.Generate(request, timeout=120)
                tokens = response.usage.completion_tokens
            else:
                messages = list(self.gateway.GenerateStream(request, timeout=120))
                tokens = messages[-1].usage.completion_tokens if messages else 0
            if tokens <= 0:
                self.errors.append(f"gateway request {i}: no tokens")
        except grpc.RpcError as error:
            self.errors.append(f"gateway request {i}: {error.code()} {error.details()}")

    def _invalid(self):
        try:
            self.gateway.Generate(gateway_pb2.GenerateRequest(text="hi", max_tokens=0), timeout=30)
            self.errors.append("max_tokens=0 was accepted")
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
                self.errors.append(f"max_tokens=0: {error.code()} instead of INVALID_ARGUMENT")

    def _opt_batch(self, round_index, size):
        batch = worker_pb2.WorkerBatch()
        for i in range(size):
            request = batch.requests.add(request_id=f"opt-{round_index}-{i}", max_tokens=16, ignore_eos=True)
            request.prompt_token_ids.extend([(7 * i + 3 * k + round_index) % 500 + 3 for k in range(6)])
            request.sampling.temperature = 0.0
            request.sampling.top_p = 1.0
            request.sampling.repetition_penalty = 1.0
            request.density.mode = common_pb2.DENSITY_MODE_FIXED
            request.density.value = 0.5
        try:
            tokens, finished = {}, {}
            for event in self.opt_worker.Generate(batch, timeout=120):
                for update in event.updates:
                    tokens[update.request_id] = tokens.get(update.request_id, 0) + len(update.token_ids)
                    if update.finish_reason != common_pb2.FINISH_REASON_UNSPECIFIED:
                        finished[update.request_id] = update.finish_reason
            bad = {rid: reason for rid, reason in finished.items() if reason != common_pb2.FINISH_REASON_LENGTH}
            if len(finished) != size or bad or any(n != 16 for n in tokens.values()):
                self.errors.append(f"OPT worker batch {round_index}: finished {finished}, tokens {tokens}")
        except grpc.RpcError as error:
            self.errors.append(f"OPT worker batch {round_index}: {error.code()} {error.details()}")

    def round(self, completions, opt_size):
        threads = [threading.Thread(target=self._completion, args=(self.rounds * 100 + i,))
                   for i in range(completions)]
        threads.append(threading.Thread(target=self._invalid))
        threads.append(threading.Thread(target=self._opt_batch, args=(self.rounds, opt_size)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.rounds += 1

    def start_trickle(self):
        """Keeps a small round going every second until stop()."""
        def run():
            while not self._stop.wait(1.0):
                self.round(2, 2)
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(180)
        self.gateway_channel.close()
        self.opt_channel.close()


# ---- the test ----

def main():
    bin_dir, model = check_prerequisites()
    prometheus_binary = os.environ.get("PROMETHEUS", "/usr/bin/prometheus")
    if not os.access(prometheus_binary, os.X_OK):
        skip(f"{prometheus_binary} not installed (Debian package prometheus; scripts/install-deps)")
    polar = os.path.join(bin_dir, "polar")
    if not os.access(polar, os.X_OK):
        skip(f"polar is not built in {bin_dir}")
    data_dir = os.environ.get("POLAR_TEST_DATA_DIR",
                              os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data"))
    opt_model = os.path.join(data_dir, "models", "tiny-opt")
    if not os.path.isfile(os.path.join(opt_model, "config.json")):
        skip(f"no tiny OPT test model at {opt_model}")

    checks = Checks()
    work_dir = tempfile.mkdtemp(prefix="polar-dashboards-")
    processes = {}
    prometheus = load = None
    try:
        head_routers = os.path.join(work_dir, "head-routers.safetensors")
        write_head_routers(head_routers, *model_facts(polar, model))
        with open(os.path.join(opt_model, "config.json")) as f:
            mlp_routers = os.path.join(work_dir, "mlp-routers.safetensors")
            write_mlp_routers(mlp_routers, json.load(f))

        worker_a, a_grpc, a_metrics = start_worker(
            bin_dir, work_dir, "polar-worker-routers",
            ["--model", model, "--kv-cache-bytes", str(64 << 20), "--routers", head_routers, "--per-head-metrics"])
        processes["polar-worker-routers"] = worker_a
        worker_b, b_grpc, b_metrics = start_worker(
            bin_dir, work_dir, "polar-worker-opt",
            ["--model", opt_model, "--kv-cache-bytes", str(8 << 20), "--mlp-routers", mlp_routers])
        processes["polar-worker-opt"] = worker_b
        gateway = Process([os.path.join(bin_dir, "polar-gateway"), "--listen", "127.0.0.1:0",
                           "--metrics-listen", "127.0.0.1:0", "--workers", a_grpc], work_dir, "polar-gateway")
        processes["polar-gateway"] = gateway
        line = gateway.wait_for_line("polar-gateway listening", 60)
        g_grpc, g_metrics = field(line, "grpc"), field(line, "metrics")
        wait_until("the gateway has a ready worker", lambda: metric_value(scrape(g_metrics), "polar_workers_ready") >= 1,
                   300)

        prometheus = Prometheus(prometheus_binary, project_prometheus_config(
            {"polar-gateway": [g_metrics], "polar-worker": [a_metrics, b_metrics]}), work_dir)
        prometheus.wait_until_ready(60)
        wait_until("every target up", lambda: (r := prometheus.query('up{job=~"polar-.*"} == 1')) and len(r) == 3, 60)

        load = Load(g_grpc, b_grpc)

        def load_run():
            started = time.monotonic()
            for _ in range(2):
                load.round(6, 4)
            print(f"  {load.rounds} rounds in {time.monotonic() - started:.1f} s", flush=True)
            assert not load.errors, load.errors
            load.start_trickle()

        checks.run("load_run", load_run)

        def rules_healthy():
            rules = wait_until("every rule evaluated", lambda: (h := prometheus.rule_health()) and
                               all(health != "unknown" for _, health, _ in h) and h, 30)
            errors = [f"{name}: {error}" for name, health, error in rules if health != "ok"]
            assert not errors, errors
            print(f"  {len(rules)} rules evaluate without error", flush=True)

        checks.run("rules_healthy", rules_healthy)

        def returns_data(expr):
            samples = prometheus.query(expr)
            finite = [s for s in samples if math.isfinite(s[1])]
            return finite

        for file_name, dashboard in obs_lib.load_dashboards():
            uid = dashboard["uid"]
            for variable, selector, label in obs_lib.variable_queries(dashboard):
                def variable_check(selector=selector, label=label):
                    params = {"match[]": obs_lib.substitute(selector, dashboard)} if selector else {}
                    values = wait_until(f"label_values({selector}, {label})",
                                        lambda: prometheus.api(f"label/{label}/values", params), QUERY_DEADLINE_SECONDS)
                    print(f"  {label}: {values[:8]}{' ...' if len(values) > 8 else ''}", flush=True)

                checks.run(f"{uid}.variable.{variable}", variable_check)
            for q in obs_lib.panel_queries(dashboard):
                expr = obs_lib.substitute(q["expr"], dashboard)

                def panel_check(expr=expr):
                    samples = wait_until(f"data for {expr!r}", lambda: returns_data(expr), QUERY_DEADLINE_SECONDS, 1)
                    shown = ", ".join(f"{ {k: v for k, v in labels.items() if k != '__name__'} }={value:.4g}"
                                      for labels, value in samples[:3])
                    print(f"  {len(samples)} series: {shown}{' ...' if len(samples) > 3 else ''}", flush=True)

                checks.run(f"{uid}.{q['panel']}.{q['ref']}", panel_check)

        # The sparsity panels show sparsity, not just numbers.
        def head_density_below_one():
            values = {l.get("layer"): v for l, v in prometheus.query("layer:polar_attention_head_density:ratio_rate1m")}
            assert values.get("0") == 1.0, f"layer 0 is dense: {values.get('0')}"
            routed = [v for layer, v in values.items() if layer != "0"]
            assert routed and min(routed) < 1.0, f"routed layers at density 1: {values}"
            print(f"  layer 0: {values['0']:.3f}, routed layers: {min(routed):.3f}..{max(routed):.3f}", flush=True)

        def head_selection_below_one():
            values = [v for _, v in prometheus.query("instance_layer_head:polar_attention_head_selected:ratio_rate1m")]
            assert values and min(values) < 1.0 and max(values) <= 1.0 + 1e-9, (min(values), max(values))

        def mlp_density_below_one():
            values = {l.get("layer"): v for l, v in prometheus.query("layer:polar_mlp_neuron_density:ratio_rate1m")}
            assert values and min(values.values()) < 1.0, f"MLP density: {values}"
            print(f"  MLP density by layer: { {k: round(v, 3) for k, v in values.items()} }", flush=True)

        checks.run("head_density_below_one", head_density_below_one)
        checks.run("head_selection_below_one", head_selection_below_one)
        checks.run("mlp_density_below_one", mlp_density_below_one)

        def load_without_errors():
            load.stop()
            assert not load.errors, load.errors[:5]
            print(f"  {load.rounds} load rounds in all", flush=True)

        checks.run("load_without_errors", load_without_errors)
    except Exception:
        checks.setup_failed()
    finally:
        if load is not None:
            load.stop()
        if prometheus is not None:
            prometheus.stop()
        codes = {}
        for name in ("polar-gateway", "polar-worker-routers", "polar-worker-opt"):
            if name in processes:
                codes[name] = processes[name].stop()

        def services_exit_zero():
            assert all(code == 0 for code in codes.values()), f"exit codes {codes}; logs in {work_dir}"

        checks.run("services_exit_zero", services_exit_zero)
        if checks.failed == 0:
            shutil.rmtree(work_dir, ignore_errors=True)
        else:
            print(f"logs kept in {work_dir}", flush=True)
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
