#!/usr/bin/env python3
"""Checks the Grafana dashboards in grafana/: each is a dashboard Grafana can provision (uid,
title, panels with ids and grid positions), every query parses as PromQL (promtool check rules,
with Grafana's $__ variables replaced), and every metric it names is one the services export or a
recording rule of alerts/ defines. Exits 1 naming what is wrong."""

import json
import pathlib
import re
import subprocess
import sys
import tempfile
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
FUNCTIONS = {"sum", "max", "min", "avg", "count", "rate", "irate", "increase", "histogram_quantile",
             "topk", "bottomk", "abs", "clamp_min", "clamp_max", "scalar", "and", "or", "unless",
             "offset"}
# What the prometheus crate's process collector exports (Linux), registered in the default
# registry when the crate's "process" feature is on.
PROCESS_COLLECTOR = {"process_cpu_seconds_total", "process_open_fds", "process_max_fds",
                     "process_virtual_memory_bytes", "process_resident_memory_bytes",
                     "process_start_time_seconds", "process_threads"}
problems = []

# Metric names the code registers: a literal with a metric suffix, or a snake_case literal before a
# help text (gauges such as "tokio_workers", "Worker threads of the tokio runtime"); the process
# collector's when the prometheus crate has it on; and the recording rules.
source = "\n".join(p.read_text() for p in ROOT.glob("**/src/**/*.rs") if "target" not in p.parts)
exported = set(re.findall(r'"([a-z_]+_(?:total|seconds|ms|pending))"', source))
exported |= set(re.findall(r'"([a-z][a-z0-9]*(?:_[a-z0-9]+)+)",\s*"[^"]* [^"]*"', source))
cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
prometheus = cargo.get("workspace", {}).get("dependencies", {}).get("prometheus", {})
if "process" in (prometheus.get("features", []) if isinstance(prometheus, dict) else []) \
        and "default_registry()" in source:
    exported |= PROCESS_COLLECTOR
rules = (ROOT / "alerts" / "shop.rules.yaml").read_text()
recorded = set(re.findall(r"record:\s*(\S+)", rules))

exprs = []
uids = {}
for path in sorted((ROOT / "grafana").glob("*.json")):
    dash = json.loads(path.read_text())
    for key in ("uid", "title", "panels"):
        if not dash.get(key):
            problems.append(f"{path.name}: no {key}")
    if dash.get("uid") in uids:
        problems.append(f"{path.name}: uid {dash['uid']} is {uids[dash['uid']]}'s too")
    uids.setdefault(dash.get("uid"), path.name)
    ids = set()
    for panel in dash.get("panels", []):
        where = f"{path.name} panel {panel.get('title')!r}"
        if panel.get("id") in ids:
            problems.append(f"{where}: duplicate id {panel.get('id')}")
        ids.add(panel.get("id"))
        if not {"x", "y", "w", "h"} <= set(panel.get("gridPos", {})):
            problems.append(f"{where}: gridPos needs x, y, w, h")
        if panel.get("type") == "row":
            continue
        if not panel.get("targets"):
            problems.append(f"{where}: no queries")
        for target in panel.get("targets", []):
            expr = target.get("expr", "")
            exprs.append((where, expr))
            # What is left without label lists, matchers, ranges and functions is metric names.
            bare = re.sub(r"\b(by|without)\s*\([^)]*\)", " ", expr)
            bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare)
            for name in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", bare):
                if name in FUNCTIONS:
                    continue
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                if ":" in name:
                    if name not in recorded:
                        problems.append(f"{where}: {name} is no recording rule of alerts/")
                elif base not in exported:
                    problems.append(f"{where}: no service exports {base}")

# promtool parses PromQL in rule files: check every query as a recording rule.
with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
    f.write("groups:\n  - name: dashboard-queries\n    rules:\n")
    for i, (_, expr) in enumerate(exprs):
        expr = expr.replace("$__rate_interval", "5m").replace("$__range", "1h")
        f.write(f"      - record: dashboard:query_{i}\n        expr: {json.dumps(expr)}\n")
checked = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
if checked.returncode != 0:
    problems.append("a query does not parse:\n" + checked.stdout + checked.stderr)

for problem in problems:
    print(problem, file=sys.stderr)
print(f"{len(exprs)} dashboard queries checked, {len(problems)} problems")
sys.exit(1 if problems else 0)
