"""A real Prometheus server scrapes polar-worker and polar-gateway.

Issue 3's metrics acceptance: starts a polar-worker (the default model) and a
polar-gateway on loopback, then Debian's /usr/bin/prometheus (installed by
scripts/install-deps) with a 1 s scrape interval over both /metrics
endpoints, sends a few completions through the gateway with the Python stubs,
and asks Prometheus's query API for the throughput (generated tokens),
latency (time-to-first-token quantile), per-layer attention-head and request
series. Prometheus and the services are always stopped at the end.

The Prometheus class and wait_until() are shared with dashboard_queries_test.py.

Standard library + grpcio only. Run it through scripts/run-python-test (ctest
does). Environment: POLAR_BIN_DIR, POLAR_DEFAULT_MODEL, and PROMETHEUS (the
binary; default /usr/bin/prometheus). Exits 77 ("skipped: ...") when the
model, the binaries or Prometheus are missing, non-zero when a check fails.
"""

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

from polar.v1 import gateway_pb2

# Shared harness: starting/stopping the services, the check runner.
from python_client_test import Checks, Services, check_prerequisites, skip

SCRAPE_SETTLE_SECONDS = 40  # how long the queries may take to see the requests


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def wait_until(description, predicate, timeout, period=0.25):
    """Polls `predicate` every `period` s until it returns a truthy value, which it returns."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{description}: not within {timeout} s")
        time.sleep(period)


def scrape_config(targets):
    """prometheus.yml text that scrapes {job name: "host:port" of a /metrics endpoint} every second."""
    config = ["global:", "  scrape_interval: 1s", "  evaluation_interval: 1s", "scrape_configs:"]
    for job, address in targets.items():
        config += [f"  - job_name: {job}", "    static_configs:", f"      - targets: ['{address}']"]
    return "\n".join(config) + "\n"


class Prometheus:
    """A Prometheus server on loopback with its own config and storage, and
    the parts of its HTTP API the tests ask."""

    def __init__(self, binary, config_text, work_dir):
        config_path = os.path.join(work_dir, "prometheus.yml")
        with open(config_path, "w") as f:
            f.write(config_text)
        self.address = f"127.0.0.1:{free_port()}"
        self.log_path = os.path.join(work_dir, "prometheus.log")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config_path}", f"--storage.tsdb.path={os.path.join(work_dir, 'data')}",
             f"--web.listen-address={self.address}"],
            stdout=self._log, stderr=subprocess.STDOUT)

    def wait_until_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited ({self.proc.returncode}): {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://{self.address}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready within {timeout} s: {self.log_tail()}")

    def api(self, path, params=None):
        """The "data" of a successful /api/v1/`path` answer."""
        url = f"http://{self.address}/api/v1/{path}?" + urllib.parse.urlencode(params or {}, doseq=True)
        body = http_json(url)
        if body.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expression):
        """[(labels, value)] of an instant query (vectors and scalars)."""
        data = self.api("query", {"query": expression})
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(s["metric"], float(s["value"][1])) for s in data["result"]]

    def targets_health(self):
        """{job: health} of the active targets ("up", "down", "unknown")."""
        return {t["labels"]["job"]: t["health"] for t in self.api("targets")["activeTargets"]}

    def rule_health(self):
        """[(name, health, last error)] of every recording and alerting rule."""
        groups = self.api("rules")["groups"]
        return [(r.get("name"), r.get("health"), r.get("lastError")) for g in groups for r in g["rules"]]

    def log_tail(self):
        self._log.flush()
        with open(self.log_path) as log:
            return "".join(log.readlines()[-10:])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def send_requests(stub, count):
    """`count` greedy completions, side by side (so they share batches)."""
    errors = []

    def one(i):
        request = gateway_pb2.GenerateRequest(text=f"Count to ten, attempt {i}:", max_tokens=8)
        request.sampling.temperature = 0.0
        try:
            response = stub.Generate(request, timeout=120)
            if response.usage.completion_tokens <= 0:
                errors.append(f"request {i}: no tokens")
        except Exception as error:  # reported by the caller's check
            errors.append(f"request {i}: {error}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def main():
    bin_dir, model = check_prerequisites()
    prometheus_binary = os.environ.get("PROMETHEUS", "/usr/bin/prometheus")
    if not os.access(prometheus_binary, os.X_OK):
        skip(f"{prometheus_binary} not installed (Debian package prometheus; scripts/install-deps)")

    checks = Checks()
    work_dir = tempfile.mkdtemp(prefix="polar-prometheus-")
    services = Services()
    prometheus = None
    try:
        services.start(bin_dir, model)
        prometheus = Prometheus(prometheus_binary, scrape_config({"polar-worker": services.worker_metrics,
                                                                  "polar-gateway": services.gateway_metrics}),
                                work_dir)
        prometheus.wait_until_ready()

        def both_targets_up():
            health = wait_until("both scrape targets up",
                                lambda: (h := prometheus.targets_health()) and
                                all(h.get(job) == "up" for job in ("polar-worker", "polar-gateway")) and h, 30, 1)
            print(f"  targets: {health}", flush=True)

        def requests_through_gateway():
            send_requests(services.stub, 4)

        def series(description, expression, accept):
            """A check that polls `expression` until some sample satisfies `accept`."""

            def check():
                def satisfied():
                    samples = prometheus.query(expression)
                    return [s for s in samples if accept(s[1])]

                samples = wait_until(f"{description} ({expression})", satisfied, SCRAPE_SETTLE_SECONDS, 1)
                print(f"  {expression} -> {samples[:2]}", flush=True)

            return check

        positive = lambda v: v > 0
        checks.run("both_targets_up", both_targets_up)
        checks.run("requests_through_gateway", requests_through_gateway)
        checks.run("throughput_series", series(
            "token throughput", "rate(polar_generation_tokens_total[30s])", positive))
        checks.run("latency_series", series(
            "time-to-first-token median",
            "histogram_quantile(0.5, sum by (le) (rate(polar_time_to_first_token_seconds_bucket[30s])))",
            lambda v: math.isfinite(v) and v > 0))
        checks.run("per_layer_head_series", series(
            "attention heads of layer 0", 'polar_attention_heads_active_total{layer="0"}', positive))
        checks.run("requests_series", series(
            "gateway requests", "sum(polar_requests_total)", lambda v: v >= 4))
    except Exception:
        checks.setup_failed()
    finally:
        if prometheus is not None:
            prometheus.stop()
        codes = services.stop()

        def services_exit_zero():
            assert codes == (0, 0), f"exit codes (gateway, worker) = {codes}; logs in {services.log_dir}"

        checks.run("services_exit_zero", services_exit_zero)
        shutil.rmtree(work_dir, ignore_errors=True)
        if checks.failed == 0:
            shutil.rmtree(services.log_dir, ignore_errors=True)  # kept on failure: the services' logs
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
