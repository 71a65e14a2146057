"""Lints, packages and renders the Helm chart with Helm's own Go SDK (helm-python-sdk).

Run by .ci/render-helm, which installs the SDK into a venv; see that script. Steps:

1. `helm lint --strict` of the chart directory with its default values and with each value
   set under its ci/ folder, for the oldest and the newest Kubernetes version supported;
2. `helm package` into --package-dir, and a copy into --out/package/;
3. renders of the packaged chart (what users install: .helmignore applied) as
   `helm template kubelet-rubber-stamp <chart> -n <namespace> [-f ci/<set>-values.yaml]`
   does, one file of manifests per value set in --out: default.yaml and <set>.yaml, each
   object once, in a stable order; the NOTES in --out/notes/;
4. value sets the chart must refuse (values.schema.json): each must fail to render with a
   message naming the offending key; the messages go to --out/rejected/<name>.txt.

Only the standard library besides the SDK. Exits non-zero, saying why, on any failure.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import shutil
import sys

import helm_python as helm

RELEASE = "kubelet-rubber-stamp"
NAMESPACE = "rubber-stamp"
# Value sets rendered into another namespace than the default one, to show that every
# object follows the release namespace.
NAMESPACES = {"everything": "cluster-addons", "other-namespace": "cluster-addons"}
KUBERNETES_VERSIONS = ["v1.33.0", "v1.37.0"]

# name -> (values, text the error must contain). Each is what a user might mistype.
REJECTED = {
    "typo-top-level": ({"agentIdentiy": "token"}, "additional properties 'agentIdentiy' not allowed"),
    "typo-nested": ({"approver": {"replica": 3}}, "additional properties 'replica' not allowed"),
    "identity-mode": ({"agentIdentity": "kubelet"}, "/agentIdentity"),
    "replicas-type": ({"approver": {"replicas": "two"}}, "/approver/replicas"),
    "image-digest": ({"agent": {"image": {"digest": "latest"}}}, "/agent/image/digest"),
    "pod-monitor-scheme": ({"podMonitor": {"scheme": "https"}}, "additional properties 'scheme' not allowed"),
}

# name -> (values, text the error must contain): values the schema allows but a template
# refuses with `fail`, because they would leak a credential.
REFUSED_BY_TEMPLATES = {
    "token-over-http": (
        {"serviceMonitor": {"enabled": True, "scheme": "http"}},
        "would send Prometheus' ServiceAccount token in clear text",
    ),
    "token-unverified": (
        {"serviceMonitor": {"enabled": True, "tlsConfig": {"insecureSkipVerify": True}}},
        "would send Prometheus' ServiceAccount token to any endpoint",
    ),
}

DOCUMENT_SEPARATOR = re.compile(r"(?m)^---[ \t]*$")


def fail(message: str) -> None:
    print(f"render-helm: {message}", file=sys.stderr)
    sys.exit(1)


def value_sets(chart: pathlib.Path) -> dict[str, pathlib.Path | None]:
    sets: dict[str, pathlib.Path | None] = {"default": None}
    for path in sorted((chart / "ci").glob("*-values.yaml")):
        sets[path.name.removesuffix("-values.yaml")] = path
    return sets


def read_values(path: pathlib.Path | None) -> dict | None:
    if path is None:
        return None
    # Helm's own parser, as `-f` uses it.
    return helm.values_from_yaml(path.read_text())


def lint(chart: pathlib.Path, sets: dict[str, pathlib.Path | None]) -> None:
    for name, path in sets.items():
        for version in KUBERNETES_VERSIONS:
            report = helm.lint(
                chart,
                read_values(path),
                strict=True,
                namespace=NAMESPACES.get(name, NAMESPACE),
                kube_version=version,
            )
            # Severity 1 is INFO ("icon is recommended"); strict fails warnings and errors.
            problems = [m for m in report["messages"] if m["severity"] >= 2] + [
                {"path": "", "error": e} for e in report["errors"]
            ]
            if problems:
                details = "; ".join(f"{m['path']}: {m['error']}" for m in problems)
                fail(f"helm lint --strict ({name}, Kubernetes {version}): {details}")
    print(f"render-helm: lint --strict: clean with {len(sets)} value sets on Kubernetes {' and '.join(KUBERNETES_VERSIONS)}")


# Helm's install order (pkg/release/v1/util/kind_sorter.go), which `helm template` prints
# in; kinds it does not list come last.
INSTALL_ORDER = [
    "PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
    "PodSecurityPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList",
    "ConfigMap", "StorageClass", "PersistentVolume", "PersistentVolumeClaim",
    "CustomResourceDefinition", "ClusterRole", "ClusterRoleList", "ClusterRoleBinding",
    "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList", "Service",
    "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
    "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress",
    "APIService", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
]
KIND = re.compile(r"(?m)^kind:[ \t]*(\S+)")
NAME = re.compile(r"(?m)^metadata:\n(?:[ \t]+.*\n)*?[ \t]+name:[ \t]*(\S+)")


def documents(manifests: dict[str, str]) -> list[str]:
    """The rendered objects in Helm's install order, each as a YAML document headed by the
    template it came from."""
    docs = []
    for template in sorted(manifests):
        if template.endswith("NOTES.txt"):
            continue
        for doc in DOCUMENT_SEPARATOR.split(manifests[template]):
            meaningful = [
                line for line in doc.splitlines() if line.strip() and not line.lstrip().startswith("#")
            ]
            if not meaningful:
                continue
            kind = KIND.search(doc)
            if kind is None:
                fail(f"{template}: a document without a kind: {doc!r}")
            name = NAME.search(doc)
            order = INSTALL_ORDER.index(kind[1]) if kind[1] in INSTALL_ORDER else len(INSTALL_ORDER)
            key = (order, kind[1], name[1] if name else "")
            docs.append((key, f"# Source: {template}\n" + doc.strip("\n") + "\n"))
    return [doc for _, doc in sorted(docs, key=lambda d: d[0])]


def render(chart: helm.Chart, values: dict | None, namespace: str) -> dict[str, str]:
    return chart.render(values, name=RELEASE, namespace=namespace, is_install=True)


SCHEMA = "values.schema.json"
TEMPLATES = "the templates"


def expect_refused(chart, out: pathlib.Path, name: str, values: dict, expected: str, by: str) -> None:
    """Renders `values`, which `by` (SCHEMA: a HelmValuesError; TEMPLATES: a template's
    `fail`, any other HelmError) must refuse with a message containing `expected`; keeps the
    message in out/rejected/<name>.txt."""
    try:
        render(chart, values, NAMESPACE)
    except helm.HelmError as error:
        refused_by = SCHEMA if isinstance(error, helm.HelmValuesError) else TEMPLATES
        if refused_by != by:
            fail(f"value set {name} was refused by {refused_by}, not by {by}: {error}")
        message = str(error)
        if expected not in message:
            fail(f"value set {name} was refused, but without {expected!r}: {message}")
        (out / "rejected" / f"{name}.txt").write_text(message)
        return
    fail(f"value set {name} ({values}) rendered, but {by} must refuse it")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chart", required=True, type=pathlib.Path)
    parser.add_argument("--package-dir", required=True, type=pathlib.Path)
    parser.add_argument("--out", required=True, type=pathlib.Path)
    args = parser.parse_args()

    sets = value_sets(args.chart)
    lint(args.chart, sets)

    args.package_dir.mkdir(parents=True, exist_ok=True)
    archive = helm.package(args.chart, destination=args.package_dir)
    print(f"render-helm: package: {archive} ({helm.digest(archive)})")
    # A copy beside the renders, for readers that run after the lock is released.
    (args.out / "package").mkdir(parents=True, exist_ok=True)
    shutil.copy(archive, args.out / "package")

    (args.out / "notes").mkdir(parents=True, exist_ok=True)
    (args.out / "rejected").mkdir(parents=True, exist_ok=True)
    with helm.Chart.load(archive) as chart:
        for name, path in sets.items():
            namespace = NAMESPACES.get(name, NAMESPACE)
            try:
                manifests = render(chart, read_values(path), namespace)
            except helm.HelmError as error:
                fail(f"rendering {name} ({path or 'default values'}): {error}")
            docs = documents(manifests)
            (args.out / f"{name}.yaml").write_text("---\n".join(docs))
            notes = next((text for template, text in manifests.items() if template.endswith("NOTES.txt")), "")
            (args.out / "notes" / f"{name}.txt").write_text(notes)
            print(f"render-helm: {name}: {len(docs)} objects in namespace {namespace} -> {args.out / (name + '.yaml')}")

        for name, (values, expected) in REJECTED.items():
            expect_refused(chart, args.out, name, values, expected, SCHEMA)
        print(f"render-helm: {len(REJECTED)} invalid value sets refused by {SCHEMA}")
        for name, (values, expected) in REFUSED_BY_TEMPLATES.items():
            expect_refused(chart, args.out, name, values, expected, TEMPLATES)
        print(f"render-helm: {len(REFUSED_BY_TEMPLATES)} value sets that would leak a token refused by the templates")


if __name__ == "__main__":
    main()
