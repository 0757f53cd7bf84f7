"""Shared helpers of the observability and container checks (tests/deploy/obs_*_test.py
and tests/integration/dashboard_queries_test.py).

- Checks: a tiny runner whose last line is "N passed, N failed", and skip()
  (exit 77). The Python integration tests (tests/integration/*_test.py) use
  these two as well, so every Python test reports the same way.
- The Grafana dashboards: their panel and variable queries, and Grafana's
  variables substituted the way Grafana does for "All" selections, so the
  expressions can go to promtool or to Prometheus's query API.
- The metric names the services register (from their sources) and the flags
  the binaries accept (from their --help).

Standard library only; PyYAML is imported by the tests that need it.
"""

import glob
import json
import os
import re
import subprocess
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(ROOT, "deploy")
DASHBOARD_DIR = os.path.join(DEPLOY, "grafana", "dashboards")
RULE_FILES = [os.path.join(DEPLOY, "prometheus", "rules", name)
              for name in ("polar-recording.yml", "polar-alerts.yml")]
SKIP_EXIT_CODE = 77  # ctest's SKIP_RETURN_CODE for these tests


def skip(reason):
    print(f"skipped: {reason}", flush=True)
    sys.exit(SKIP_EXIT_CODE)


class Checks:
    """Each check is a function; a failure is reported and counted, not raised."""

    def __init__(self):
        self.passed = self.failed = 0

    def run(self, name, function, *args):
        started = time.monotonic()
        try:
            function(*args)
        except Exception:
            self.failed += 1
            print(f"FAIL {name}:\n{traceback.format_exc()}", flush=True)
        else:
            self.passed += 1
            print(f"PASS {name} ({time.monotonic() - started:.2f} s)", flush=True)

    def setup_failed(self):
        """Called in the `except` around a script's setup and checks: the
        exception, raised outside any one check, fails the run as "FAIL setup"."""
        self.failed += 1
        print(f"FAIL setup:\n{traceback.format_exc()}", flush=True)

    def finish(self):
        print(f"{self.passed} passed, {self.failed} failed", flush=True)
        return 0 if self.failed == 0 else 1


# ---- dashboards ----

def load_dashboards():
    """[(file name, dashboard JSON)] of every dashboard Grafana is provisioned with."""
    paths = sorted(glob.glob(os.path.join(DASHBOARD_DIR, "*.json")))
    if not paths:
        raise AssertionError(f"no dashboards in {DASHBOARD_DIR}")
    result = []
    for path in paths:
        with open(path) as f:
            result.append((os.path.basename(path), json.load(f)))
    return result


def panels_of(dashboard):
    """Every panel that is not a row (rows may nest collapsed panels)."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def panel_queries(dashboard):
    """[{"panel", "ref", "expr", "legend"}] of every target of every panel."""
    queries = []
    for panel in panels_of(dashboard):
        for target in panel.get("targets", []):
            queries.append({"panel": panel.get("title", ""), "ref": target.get("refId", ""),
                            "expr": target.get("expr", ""), "legend": target.get("legendFormat", "")})
    return queries


LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.*),\s*)?([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$", re.S)


def variable_queries(dashboard):
    """[(variable name, selector or None, label)] of the label_values() query variables."""
    result = []
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query", "")
        match = LABEL_VALUES.match(query or "")
        if not match:
            raise AssertionError(f"variable {variable.get('name')}: not a label_values() query: {query!r}")
        result.append((variable["name"], match.group(1), match.group(2)))
    return result


# What Grafana puts in for its built-in variables. $__rate_interval and
# $__interval depend on the scrape interval and the panel's width; the values
# here suit a Prometheus scraping every second or few.
DEFAULT_BUILTINS = {"__rate_interval": "30s", "__interval": "15s", "__range": "5m", "__range_s": "300",
                    "__range_ms": "300000", "__interval_ms": "15000"}

VARIABLE = re.compile(r"\$\{([A-Za-z0-9_]+)(?::[A-Za-z0-9_]+)?\}|\[\[([A-Za-z0-9_]+)\]\]|\$([A-Za-z0-9_]+)")


def substitute(expr, dashboard, builtins=None):
    """expr with every Grafana variable replaced: built-ins by `builtins`,
    template variables by the value Grafana uses when All is selected (their
    allValue). An unknown variable is an error: Grafana would send it as is."""
    values = dict(DEFAULT_BUILTINS if builtins is None else builtins)
    for variable in dashboard.get("templating", {}).get("list", []):
        name = variable.get("name")
        if variable.get("type") == "datasource":
            continue
        if variable.get("includeAll") and variable.get("allValue"):
            values[name] = variable["allValue"]
        elif isinstance(variable.get("current", {}).get("value"), str):
            values[name] = variable["current"]["value"]

    def replace(match):
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in values:
            raise AssertionError(f"unknown Grafana variable ${name} in {expr!r}")
        return values[name]

    return VARIABLE.sub(replace, expr)


# ---- metric names ----

STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
IDENTIFIER = re.compile(r"(?<![A-Za-z0-9_:.$])([A-Za-z_:][A-Za-z0-9_:]*)")


def metric_names_in(expr):
    """Names in a PromQL expression that are Polar metrics (polar_...) or
    recording rules (level:metric:operations); string literals removed."""
    text = STRING_LITERAL.sub('""', expr)
    names = set()
    for name in IDENTIFIER.findall(text):
        if name.startswith("polar_") or (":" in name and not name.startswith(":")):
            names.add(name)
    return names


def registered_metrics():
    """Metric names the services register: the "polar_..." string literals in
    services/ (sources, not tests), with _bucket/_sum/_count for histograms."""
    names = set()
    for path in glob.glob(os.path.join(ROOT, "services", "**", "*.cc"), recursive=True):
        if path.endswith("_test.cc"):
            continue
        with open(path) as f:
            text = f.read()
        for match in re.finditer(r'"(polar_[a-z0-9_]+)"', text):
            name = match.group(1)
            names.add(name)
            # A histogram's name follows AddHistogram( or the gateway's histogram( helper.
            if re.search(r"[Hh]istogram\(\s*\{?\s*$", text[max(0, match.start() - 60):match.start()]):
                names.update({name + "_bucket", name + "_sum", name + "_count"})
    return names


# ---- binaries ----

def binary_flags(binary):
    """The --flags a Polar binary accepts, dashes and underscores both."""
    name = os.path.basename(binary)
    args = ["--helpfull"] if name == "polar-gateway" else ["--help"]  # absl flags vs. hand-written help
    out = subprocess.run([binary] + args, capture_output=True, text=True, timeout=30)
    text = out.stdout + out.stderr
    flags = set()
    for flag in re.findall(r"(?m)^\s+--([a-z][a-z0-9_-]*)", text):
        flags.add(flag.replace("_", "-"))
    if not flags:
        raise AssertionError(f"no flags found in `{name} {' '.join(args)}`:\n{text[:2000]}")
    return flags


def check_flags(binary, argv, where):
    """Every --flag in argv (a container command) is one `binary` accepts."""
    accepted = binary_flags(binary)
    for arg in argv:
        if not arg.startswith("--"):
            continue
        flag = arg[2:].split("=", 1)[0].replace("_", "-")
        if flag not in accepted:
            raise AssertionError(f"{where}: {os.path.basename(binary)} has no flag --{flag} "
                                 f"(it has: {', '.join(sorted(accepted))})")
