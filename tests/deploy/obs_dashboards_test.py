"""Static checks of Polar's Grafana dashboards and Prometheus rules (no services).

- in_sync: deploy/grafana/dashboards/*.json and the panel list in
  docs/observability.md are what deploy/grafana/dashboards.py generates.
- structure: fixed unique uids, the datasource variable on every panel and
  target, unique panel ids and refIds, panels inside the 24-column grid and
  not overlapping, a description on every panel.
- promql_parses: every panel expression and variable selector of both
  dashboards, Grafana's variables substituted, goes into a temporary rule file
  as a recording rule, and `promtool check rules` must accept it.
- metric_names_exist: every polar_* metric a dashboard or rule names is one
  the services register, every level:metric:operation name a recording rule.
- rules_documented: every alert of polar-alerts.yml has its section in
  docs/observability.md showing its expression, `for` and severity; every
  recording rule is named there.

Run through scripts/run-python-test (PyYAML from tests/python-requirements.txt, installed by scripts/install-deps) (ctest: obs_dashboards).
Environment: PROMTOOL (default: promtool on PATH). Exits 77 only when
promtool is not installed.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

import obs_lib
from obs_lib import ROOT, Checks

DOC = os.path.join(ROOT, "docs", "observability.md")


def load_rules():
    rules = []
    for path in obs_lib.RULE_FILES:
        with open(path) as f:
            for group in yaml.safe_load(f)["groups"]:
                rules.extend(group["rules"])
    return rules


def in_sync():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "deploy", "grafana", "dashboards.py"), "--check"],
                         capture_output=True, text=True, timeout=60)
    print("  " + (out.stdout + out.stderr).strip(), flush=True)
    assert out.returncode == 0, "regenerate with: python3 deploy/grafana/dashboards.py"


def structure():
    uids = set()
    for name, dash in obs_lib.load_dashboards():
        where = name
        assert dash.get("uid") and dash["uid"] not in uids, f"{where}: uid missing or repeated"
        uids.add(dash["uid"])
        assert dash.get("title"), f"{where}: no title"
        assert dash.get("id") is None, f"{where}: provisioned dashboards carry no database id"
        assert dash.get("schemaVersion", 0) >= 36, f"{where}: schemaVersion {dash.get('schemaVersion')}"
        variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
        ds = variables.get("datasource")
        assert ds and ds["type"] == "datasource" and ds["query"] == "prometheus", \
            f"{where}: needs a Prometheus datasource variable named datasource"
        for v in variables.values():
            if v["type"] == "query":
                assert v["datasource"]["uid"] == "${datasource}", f"{where}: variable {v['name']} datasource"
        ids = set()
        cells = {}
        for panel in dash["panels"]:
            pid = panel.get("id")
            assert isinstance(pid, int) and pid not in ids, f"{where}: panel id {pid} missing or repeated"
            ids.add(pid)
            g = panel["gridPos"]
            assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["x"] + g["w"] <= 24, \
                f"{where}: panel {panel.get('title')!r} outside the 24-column grid: {g}"
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    other = cells.setdefault((x, y), panel.get("title"))
                    assert other == panel.get("title"), \
                        f"{where}: panels {other!r} and {panel.get('title')!r} overlap at {(x, y)}"
            if panel["type"] == "row":
                continue
            title = panel.get("title")
            assert title and panel.get("description"), f"{where}: panel {pid} needs a title and a description"
            assert panel.get("datasource", {}).get("uid") == "${datasource}", f"{where}: {title}: datasource"
            targets = panel.get("targets", [])
            assert targets, f"{where}: {title}: no queries"
            refs = [t.get("refId") for t in targets]
            assert len(set(refs)) == len(refs) and all(refs), f"{where}: {title}: refIds {refs}"
            for t in targets:
                assert t.get("expr", "").strip(), f"{where}: {title}/{t.get('refId')}: empty expr"
                assert t.get("datasource", {}).get("uid") == "${datasource}", f"{where}: {title}: target datasource"
            if "repeat" in panel:
                assert panel["repeat"] in variables, f"{where}: {title}: repeats over unknown ${panel['repeat']}"
        print(f"  {name}: uid {dash['uid']}, {len(ids)} panels", flush=True)


def slug(text):
    return re.sub(r"[^a-zA-Z0-9]+", "_", text).strip("_").lower()


def promql_parses(promtool):
    rules = []
    for name, dash in obs_lib.load_dashboards():
        for q in obs_lib.panel_queries(dash):
            rules.append({"record": f"dashboard:{slug(dash['uid'])}:{slug(q['panel'])}_{q['ref']}",
                          "expr": obs_lib.substitute(q["expr"], dash)})
        for variable, selector, label in obs_lib.variable_queries(dash):
            if selector:
                rules.append({"record": f"dashboard:{slug(dash['uid'])}:variable_{variable}",
                              "expr": obs_lib.substitute(selector, dash)})
    work = tempfile.mkdtemp(prefix="polar-dashboard-promql-")
    try:
        # One group per rule: promtool would reject repeated record names in
        # one group, and panels may share a title (repeated panels).
        path = os.path.join(work, "dashboards.rules.json")  # JSON is YAML
        with open(path, "w") as f:
            json.dump({"groups": [{"name": f"q{i}", "rules": [r]} for i, r in enumerate(rules)]}, f, indent=1)
        out = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True, timeout=60)
        print("  " + (out.stdout + out.stderr).strip().replace("\n", "\n  "), flush=True)
        assert out.returncode == 0, "a dashboard expression does not parse"
        assert f"SUCCESS: {len(rules)} rules found" in out.stdout, f"promtool did not check all {len(rules)} rules"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def metric_names_exist():
    registered = obs_lib.registered_metrics()
    rules = load_rules()
    recorded = {r["record"] for r in rules if "record" in r}
    used = {}
    for name, dash in obs_lib.load_dashboards():
        for q in obs_lib.panel_queries(dash):
            for metric in obs_lib.metric_names_in(q["expr"]):
                used.setdefault(metric, f"{name}: {q['panel']}")
        for variable, selector, label in obs_lib.variable_queries(dash):
            for metric in obs_lib.metric_names_in(selector or ""):
                used.setdefault(metric, f"{name}: variable {variable}")
    for rule in rules:
        for metric in obs_lib.metric_names_in(rule["expr"]):
            used.setdefault(metric, f"rule {rule.get('record') or rule.get('alert')}")
    unknown = [f"{metric} ({where})" for metric, where in sorted(used.items())
               if metric not in (recorded if ":" in metric else registered)]
    assert not unknown, "names no service registers and no recording rule defines: " + "; ".join(unknown)
    unused = sorted(recorded - set(used))
    print(f"  {len(used)} names used, all defined; recording rules no dashboard or alert reads: "
          f"{', '.join(unused) or 'none'}", flush=True)


def rules_documented():
    with open(DOC) as f:
        doc = f.read()
    squash = lambda s: " ".join(s.split())
    sections = re.split(r"(?m)^#### ", doc)
    missing = []
    for rule in load_rules():
        if "alert" in rule:
            section = next((s for s in sections if s.startswith(rule["alert"] + "\n")), None)
            if section is None:
                missing.append(f"{rule['alert']}: no '#### {rule['alert']}' section")
                continue
            for needed in (f"`{squash(rule['expr'])}`", f"for {rule['for']}",
                           f"severity {rule['labels']['severity']}"):
                if needed not in squash(section):
                    missing.append(f"{rule['alert']}: its section lacks {needed}")
        elif f"`{rule['record']}`" not in doc:
            missing.append(f"recording rule {rule['record']} is not named")
    assert not missing, "docs/observability.md is out of date: " + "; ".join(missing)


def main():
    promtool = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not promtool:
        obs_lib.skip("promtool not installed (Debian package prometheus; scripts/install-deps)")
    checks = Checks()
    checks.run("in_sync", in_sync)
    checks.run("structure", structure)
    checks.run("promql_parses", promql_parses, promtool)
    checks.run("metric_names_exist", metric_names_exist)
    checks.run("rules_documented", rules_documented)
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
