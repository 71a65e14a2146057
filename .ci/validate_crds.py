"""Validates the custom resources in rendered manifests against their CRDs' schemas.

kubernetes-validate knows only Kubernetes' own kinds: for any other it warns "Couldn't find
schema" and passes. The Helm chart renders three prometheus-operator kinds (ServiceMonitor,
PodMonitor, PrometheusRule), so .ci/validate-manifests runs this on the same files: every object whose
API group has a CRD under --crds is validated against that CRD's openAPIV3Schema for its
version, strictly as kubernetes-validate --strict is: an unknown field is an error where
the schema does not preserve unknown fields (the API server would prune it, or refuse it
with `kubectl apply --validate=strict`). An object of such a group with a kind or version
no CRD serves is an error too. Not checked: CEL rules (x-kubernetes-validations) and
string formats.

Usage: validate_crds.py --crds DIR FILE... (runs in the kubernetes-validate venv, which
has PyYAML and jsonschema).
"""

from __future__ import annotations

import argparse
import copy
import pathlib
import sys

import jsonschema
import yaml


def strict(schema: dict) -> dict:
    """The structural schema as JSON Schema, with unknown fields refused."""
    schema = copy.deepcopy(schema)

    def walk(node: dict) -> None:
        if not isinstance(node, dict):
            return
        if node.pop("nullable", False) and "type" in node:
            node["type"] = [node["type"], "null"]
        if node.get("x-kubernetes-int-or-string"):
            node.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
        if "properties" in node and "additionalProperties" not in node:
            if not node.get("x-kubernetes-preserve-unknown-fields"):
                node["additionalProperties"] = False
        for key in ("properties", "patternProperties"):
            for child in node.get(key, {}).values():
                walk(child)
        for key in ("items", "additionalProperties", "not"):
            if isinstance(node.get(key), dict):
                walk(node[key])
        for key in ("allOf", "anyOf", "oneOf"):
            for child in node.get(key, []):
                walk(child)

    walk(schema)
    return schema


# ObjectMeta as far as these objects use it (the CRD schemas leave metadata open).
METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 253},
        "namespace": {"type": "string", "minLength": 1, "maxLength": 63},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def load_crds(directory: pathlib.Path) -> tuple[dict[tuple[str, str], dict], dict[str, str]]:
    schemas: dict[tuple[str, str], dict] = {}
    versions: dict[str, str] = {}
    for path in sorted(directory.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            versions[spec["group"]] = crd["metadata"].get("annotations", {}).get(
                "operator.prometheus.io/version", "?"
            )
            for version in spec["versions"]:
                if not version.get("served"):
                    continue
                schema = strict(version["schema"]["openAPIV3Schema"])
                schema["properties"]["metadata"] = METADATA
                schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
                schemas[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = schema
    return schemas, versions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crds", required=True, type=pathlib.Path)
    parser.add_argument("files", nargs="+", type=pathlib.Path)
    args = parser.parse_args()

    schemas, versions = load_crds(args.crds)
    groups = set(versions)
    failed = False
    for path in args.files:
        count = 0
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            api_version = str(doc.get("apiVersion", ""))
            if api_version.split("/")[0] not in groups:
                continue
            kind = doc.get("kind")
            name = doc.get("metadata", {}).get("name")
            schema = schemas.get((api_version, kind))
            if schema is None:
                print(f"validate-crds: {path}: {kind} {name}: no CRD under {args.crds} serves {kind} in {api_version}", file=sys.stderr)
                failed = True
                continue
            errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.absolute_path))
            for error in errors:
                where = "/".join(str(p) for p in error.absolute_path) or "(root)"
                print(f"validate-crds: {path}: {kind} {name}: {where}: {error.message}", file=sys.stderr)
            failed |= bool(errors)
            count += 1
        if count:
            described = ", ".join(f"{g} {v}" for g, v in sorted(versions.items()))
            print(f"validate-crds: {path}: {count} custom resources checked against the CRDs of {described}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
