"""Regenerate the standalone Kubernetes JSON schemas in this folder from the ``kubernetes-validate`` wheel.

The wheel (PyPI, Apache-2.0) ships the Kubernetes OpenAPI definitions converted to JSON Schema 2020-12, one
file per kind plus a shared ``_definitions.json``. This script keeps, for each kind the manifests use, the
kind's schema plus only the definitions it references (transitively), rewrites the references to local
``#/$defs/...`` ones and drops ``description`` texts, so each file validates on its own with ``jsonschema``.

Usage (no network beyond PyPI)::

    pip download --no-deps -d /tmp/kv kubernetes-validate==1.37.0
    python tests/k8s-schemas/bundle.py /tmp/kv/kubernetes_validate-1.37.0-py3-none-any.whl
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Any

VERSION = "v1.30.0"
VARIANT = "local-strict"  # additionalProperties: false everywhere: unknown fields are errors
KINDS = ["cronjob-batch-v1", "job-batch-v1", "configmap-v1", "secret-v1", "serviceaccount-v1"]
DEFS_PREFIX = "/api/_definitions.json#/$defs/"
OUT = Path(__file__).resolve().parent / f"{VERSION}-standalone-strict"


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                continue
            if key == "$ref" and isinstance(value, str):
                value = "#/$defs/" + value.removeprefix(DEFS_PREFIX).removeprefix("#/$defs/")
            out[key] = _strip(value)
        return out
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.add(value.rsplit("/", 1)[-1])
            else:
                found |= _refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _refs(value)
    return found


def bundle(wheel: Path) -> None:
    base = f"kubernetes_validate/kubernetes-json-schema/{VERSION}-{VARIANT}/"
    with zipfile.ZipFile(wheel) as zf:
        defs = json.loads(zf.read(base + "_definitions.json"))["$defs"]
        OUT.mkdir(exist_ok=True)
        for kind in KINDS:
            schema = json.loads(zf.read(base + kind + ".json"))
            needed: dict[str, Any] = {}
            todo = _refs(schema)
            while todo:
                name = todo.pop()
                if name in needed:
                    continue
                needed[name] = defs[name]
                todo |= _refs(defs[name]) - needed.keys()
            schema.pop("$id", None)
            out = {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "$comment": f"Kubernetes {VERSION} {kind}, strict, from kubernetes-validate; see bundle.py",
                **_strip(schema),
                "$defs": {k: _strip(needed[k]) for k in sorted(needed)},
            }
            (OUT / f"{kind}.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
            print(f"{kind}: {len(needed)} definitions")


if __name__ == "__main__":
    bundle(Path(sys.argv[1]))
