#!/usr/bin/env python3
"""Splits a rendered chart (`helm template` output) into one file per object for the validators:

  <out>/k8s/NNN-<Kind>-<name>.yaml    built-in kinds, for kubernetes-validate
  <out>/crd/<schema>/NNN-<name>.json  Istio and Prometheus Operator kinds, grouped by the strict
                                      schema that checks them (crd_schemas.py's file names)

Usage: split.py <rendered.yaml> <out dir>
"""

import json
import pathlib
import sys

import yaml

CRD_GROUPS = (".istio.io/", "monitoring.coreos.com/")


def main(rendered, out):
    counts = {"k8s": 0, "crd": 0}
    for index, obj in enumerate(o for o in yaml.safe_load_all(rendered.read_text()) if o):
        name = obj["metadata"]["name"]
        if any(group in obj["apiVersion"] for group in CRD_GROUPS):
            folder = out / "crd" / (obj["apiVersion"].replace("/", "_") + "_" + obj["kind"])
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{index:03}-{name}.json").write_text(json.dumps(obj))
            counts["crd"] += 1
        else:
            folder = out / "k8s"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{index:03}-{obj['kind']}-{name}.yaml").write_text(yaml.safe_dump(obj))
            counts["k8s"] += 1
    print(f"{counts['k8s']} Kubernetes objects, {counts['crd']} CRD objects")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]))
