"""Polar's API from another language: a Python grpcio client of polar-gateway.

Starts a real polar-worker (the default model) and a real polar-gateway on
loopback (port 0; the ports come from their "listening grpc=H:P metrics=H:P"
lines), then, with the stubs scripts/gen-python-stubs generates from proto/:
streams a chat completion, checks that unary Generate returns the same text,
tokenizes, sends a malformed request (INVALID_ARGUMENT) and asks the standard
grpc.health.v1 service (SERVING). Finally stops both with SIGTERM and checks
they exit 0. This is issue 3's "a client in another language" acceptance.

Standard library + grpcio only (no pytest), so it runs wherever the stubs do;
the check runner and skip() come from tests/deploy/obs_lib.py (standard
library too), shared with the other Python tests.
Run it through scripts/run-python-test (ctest does), which puts the stubs on
PYTHONPATH. Environment: POLAR_BIN_DIR (polar-worker, polar-gateway),
POLAR_DEFAULT_MODEL (a GGUF). Exits 77 ("skipped: ...") when the model or
binaries are missing, non-zero when a check fails.

The Services class is shared with prometheus_scrape_test.py, Process and the
/metrics helpers with dashboard_queries_test.py.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import grpc

from polar.v1 import gateway_pb2, gateway_pb2_grpc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deploy"))
from obs_lib import Checks, skip  # noqa: E402  (re-exported to the other integration tests)


def check_prerequisites():
    """Returns (bin_dir, model) or exits 77 saying what is missing."""
    bin_dir = os.environ.get("POLAR_BIN_DIR", "")
    model = os.environ.get("POLAR_DEFAULT_MODEL", "")
    if not model or not os.path.exists(model):
        skip(f"default model not fetched (scripts/fetch-model): {model or 'POLAR_DEFAULT_MODEL unset'}")
    for binary in ("polar-worker", "polar-gateway"):
        if not os.access(os.path.join(bin_dir, binary), os.X_OK):
            skip(f"{binary} is not built in POLAR_BIN_DIR={bin_dir or '(unset)'}")
    return bin_dir, model


class Process:
    """A service binary whose stdout is read in the background (so its pipe
    never fills) and whose stderr goes to a log file shown on failure."""

    def __init__(self, argv, log_dir, name):
        self.name = name
        self.log_path = os.path.join(log_dir, f"{name}.log")
        self._log = open(self.log_path, "w")
        self._lines = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._log, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self._cond:
                self._lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._lines.append(None)  # end of output: the process exited
            self._cond.notify_all()

    def wait_for_line(self, prefix, timeout):
        """The first stdout line starting with `prefix`; raises after timeout or exit."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self._lines:
                    if line is None:
                        raise RuntimeError(f"{self.name} exited before '{prefix}': {self.log_tail()}")
                    if line.startswith(prefix):
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"{self.name}: no '{prefix}' line within {timeout} s")
                self._cond.wait(left)

    def log_tail(self):
        self._log.flush()
        with open(self.log_path) as log:
            return "".join(log.readlines()[-20:])

    def stop(self, timeout=60):
        """SIGTERM (drain), then the exit code; SIGKILL (and None) after `timeout`."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = None
        self._log.close()
        return code


def field(line, key):
    """'... grpc=H:P metrics=H:P' -> the value after `key=`."""
    for word in line.split():
        if word.startswith(key + "="):
            return word[len(key) + 1:]
    raise ValueError(f"no {key}= in {line!r}")


class Services:
    """polar-worker + polar-gateway on loopback, ready to serve."""

    def __init__(self):
        self.log_dir = tempfile.mkdtemp(prefix="polar-pytest-")
        self.worker = self.gateway = self.channel = None

    def start(self, bin_dir, model):
        """Starts both; on an error, whatever started is still stopped by stop()."""
        self.worker = Process([os.path.join(bin_dir, "polar-worker"), "--model", model, "--listen", "127.0.0.1:0",
                               "--metrics-listen", "127.0.0.1:0"], self.log_dir, "polar-worker")
        line = self.worker.wait_for_line("polar-worker listening", 300)
        self.worker_grpc, self.worker_metrics = field(line, "grpc"), field(line, "metrics")
        self.gateway = Process([os.path.join(bin_dir, "polar-gateway"), "--listen", "127.0.0.1:0",
                                "--metrics-listen", "127.0.0.1:0", "--workers", self.worker_grpc],
                               self.log_dir, "polar-gateway")
        line = self.gateway.wait_for_line("polar-gateway listening", 60)
        self.gateway_grpc, self.gateway_metrics = field(line, "grpc"), field(line, "metrics")
        self.channel = grpc.insecure_channel(self.gateway_grpc)
        self.stub = gateway_pb2_grpc.GatewayStub(self.channel)
        self._wait_until_ready(300)

    def _wait_until_ready(self, timeout):
        # Ready once the gateway counts a (warmed-up) worker as ready.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.gateway.proc.poll() is not None or self.worker.proc.poll() is not None:
                raise RuntimeError("a service exited while starting: " + self.gateway.log_tail() +
                                   self.worker.log_tail())
            try:
                if metric_value(scrape(self.gateway_metrics), "polar_workers_ready") >= 1:
                    return
            except OSError:
                pass  # not serving /metrics yet
            time.sleep(0.25)
        raise RuntimeError(f"the gateway had no ready worker within {timeout} s")

    def stop(self):
        """Stops the gateway, then the worker (SIGTERM); returns their exit codes."""
        if self.channel is not None:
            self.channel.close()
        gateway_code = self.gateway.stop() if self.gateway else None
        worker_code = self.worker.stop() if self.worker else None
        return gateway_code, worker_code


def scrape(address):
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        return response.read().decode()


def metric_value(text, name):
    """The value of the unlabelled sample `name` in a /metrics text, or -1."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == name:
            return float(parts[1])
    return -1.0


def chat_request():
    request = gateway_pb2.GenerateRequest(max_tokens=16)
    request.chat.messages.add(role="user", content="What is the capital of France?")
    request.sampling.temperature = 0.0  # greedy: the same text every time
    return request


def main():
    bin_dir, model = check_prerequisites()
    checks = Checks()
    services = None
    try:
        services = Services()
        services.start(bin_dir, model)
        stub = services.stub
        streamed = {}

        def stream_chat_completion():
            messages = list(stub.GenerateStream(chat_request(), timeout=120))
            assert messages, "no stream messages"
            text = "".join(m.text for m in messages)
            assert text.strip(), f"empty completion: {text!r}"
            last = messages[-1]
            assert last.finish_reason != 0, "the last message has no finish reason"
            assert all(m.finish_reason == 0 for m in messages[:-1]), "finish reason before the last message"
            assert last.usage.prompt_tokens > 0 and last.usage.completion_tokens > 0, f"usage {last.usage}"
            assert last.usage.completion_tokens <= 16, f"more than max_tokens: {last.usage}"
            assert sum(len(m.tokens) for m in messages) == last.usage.completion_tokens
            assert all(m.request_id == last.request_id for m in messages) and last.request_id
            streamed["text"] = text
            print(f"  streamed {len(messages)} messages: {text!r}", flush=True)

        def unary_generate_matches_stream():
            response = stub.Generate(chat_request(), timeout=120)
            assert "text" in streamed, "the stream check failed"
            assert response.text == streamed["text"], f"{response.text!r} != {streamed['text']!r}"
            assert response.finish_reason != 0 and response.usage.completion_tokens > 0

        def tokenize():
            response = stub.Tokenize(gateway_pb2.TokenizeRequest(text="Hello, world!"), timeout=30)
            assert len(response.token_ids) > 0 and len(response.pieces) == len(response.token_ids)
            pieces = b"".join(response.pieces)
            assert b"Hello" in pieces and b"world" in pieces, f"pieces {response.pieces}"
            assert response.rendered_text == "Hello, world!"

        def malformed_request_is_invalid_argument():
            for request in (gateway_pb2.GenerateRequest(max_tokens=4),  # no input at all
                            gateway_pb2.GenerateRequest(text="hi", max_tokens=0)):
                try:
                    stub.Generate(request, timeout=30)
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{error.code()}: {error.details()}"
                    assert error.details(), "no error message"
                else:
                    raise AssertionError(f"accepted a malformed request: {request}")

        def health_serving():
            # grpc.health.v1.Health/Check by hand (no grpcio-health-checking
            # needed): an empty HealthCheckRequest (service "", overall
            # readiness) encodes to no bytes; the response is field 1, a
            # varint status, 1 = SERVING. The gateway refreshes health every
            # 0.5 s, so allow it a few seconds to notice the ready worker.
            check = services.channel.unary_unary("/grpc.health.v1.Health/Check")
            deadline = time.monotonic() + 10
            while True:
                response = check(b"", timeout=10)
                status = response[1] if len(response) >= 2 and response[0] == 0x08 else 0
                if status == 1 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert status == 1, f"health status {status} (response bytes {response!r}), want SERVING (1)"

        checks.run("stream_chat_completion", stream_chat_completion)
        checks.run("unary_generate_matches_stream", unary_generate_matches_stream)
        checks.run("tokenize", tokenize)
        checks.run("malformed_request_is_invalid_argument", malformed_request_is_invalid_argument)
        checks.run("health_serving", health_serving)
    except Exception:
        checks.setup_failed()
    finally:
        if services is not None:
            codes = services.stop()

            def sigterm_exits_zero():
                assert codes == (0, 0), f"exit codes (gateway, worker) = {codes}; logs in {services.log_dir}"

            checks.run("sigterm_exits_zero", sigterm_exits_zero)
            if checks.failed == 0:
                shutil.rmtree(services.log_dir, ignore_errors=True)  # kept on failure: the services' logs
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
