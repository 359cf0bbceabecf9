#!/usr/bin/env python3
"""Fails when checkov found a failing check that helm/shop/ci/checkov-skip.txt does not allow for
this case and resource; prints the allowed failures with their reasons.

Usage: checkov_gate.py <checkov -o json output> <skip file> <case>
"""

import fnmatch
import json
import pathlib
import sys


def load_skips(path):
    skips = []
    for line in pathlib.Path(path).read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            check, resource, cases, reason = (part.strip() for part in line.split("|", 3))
            skips.append({"check": check, "resource": resource, "cases": cases, "reason": reason})
    return skips


def applies(skip, case):
    if skip["cases"] == "*":
        return True
    if skip["cases"].startswith("all-but:"):
        return case not in skip["cases"][len("all-but:") :].split(",")
    return case in skip["cases"].split(",")


def main(report_path, skip_path, case):
    report = json.loads(pathlib.Path(report_path).read_text())
    reports = report if isinstance(report, list) else [report]
    failed = [c for r in reports for c in r.get("results", {}).get("failed_checks", [])]
    passed = sum(len(r.get("results", {}).get("passed_checks", [])) for r in reports)
    skips = [s for s in load_skips(skip_path) if applies(s, case)]
    unexpected, allowed = [], {}
    for check in failed:
        rule = next(
            (
                s
                for s in skips
                if s["check"] == check["check_id"] and fnmatch.fnmatch(check["resource"], s["resource"])
            ),
            None,
        )
        if rule:
            allowed.setdefault(check["check_id"], []).append(check["resource"])
        else:
            unexpected.append(check)
    for check_id, resources in allowed.items():
        print(f"  allowed  {check_id} on {len(resources)} resource(s) (checkov-skip.txt)")
    for check in unexpected:
        print(f"  FAIL     {check['check_id']} {check['check_name']} on {check['resource']}")
    print(
        f"  checkov: {passed} passed, {len(failed)} failed, {len(failed) - len(unexpected)} of them allowed"
    )
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
