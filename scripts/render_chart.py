#!/usr/bin/env python3
"""Render and lint charts/roster with Helm itself: PyPI's helm-python-sdk (module helm_python), Python
bindings of Helm v4's Go library (libhelm_c.so). No helm binary is needed.

    scripts/render_chart.py check OUT_DIR        # what scripts/chart-check runs: lint, render, checks
    scripts/render_chart.py render --set all-on --out DIR [--kube-version v1.20.2] [--api-version G/V/K]...
    scripts/render_chart.py render --set default --out DIR --kubeconfig KC --namespace NS [--release R]
    scripts/render_chart.py lint [--set all-on]

`render` writes DIR/manifest.yaml (the chart's CRDs, then every rendered object, `---`-separated),
DIR/templates/<template>.yaml for each non-empty template, DIR/crds/<file> and DIR/NOTES.txt. Without
--kubeconfig it renders offline like `helm template` (`--kube-version`/`--api-version` as helm template's
`--kube-version`/`--api-versions`); with it, like `helm install --dry-run=server`: capabilities (kube version,
served APIs) are discovered from that cluster and Helm checks every kind against the cluster's REST mapping.
Nothing is created.

Value sets: `default` (values.yaml alone) and `all-on` (charts/roster/ci/all-on-values.yaml: every option
on); `--values FILE` and `--set-json KEY=JSON` add overrides on top.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "roster"
VALUE_SETS = {"default": None, "all-on": CHART / "ci" / "all-on-values.yaml"}
OLD_KUBE = "v1.20.2"  # the test environment's real kube-apiserver

try:
    import helm_python as helm
    from helm_python import _native
except ImportError:  # pragma: no cover - reported to the user
    sys.exit(
        "render_chart: the Python module helm_python is missing: python3 -m pip install helm-python-sdk "
        "(scripts/test installs it)"
    )


class CheckFailed(Exception):
    pass


# ---- values ----


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def values_for(value_set: str, files: list[str], set_json: list[str]) -> dict[str, Any]:
    """User-supplied values (Helm coalesces them with values.yaml): the set's file, then files, then --set-json."""
    values: dict[str, Any] = {}
    paths = [VALUE_SETS[value_set]] if VALUE_SETS[value_set] else []
    for path in [*paths, *map(Path, files)]:
        values = deep_merge(values, helm.values_from_yaml(Path(path).read_text()))
    for expr in set_json:
        values = deep_merge(values, helm.parse_set_json(expr))
    return values


# ---- rendering ----


def render_offline(
    chart: helm.Chart,
    values: dict[str, Any],
    release: str,
    namespace: str,
    kube_version: str | None,
    api_versions: list[str],
) -> dict[str, str]:
    """`helm template`: template path -> rendered text.

    Chart.render() does not expose kube_version/api_versions, but libhelm_c's helm_render takes them in its
    options (the same struct carries helm template's --kube-version and --api-versions), so call it directly.
    """
    opts: dict[str, Any] = {"name": release, "namespace": namespace, "is_install": True}
    if kube_version:
        opts["kube_version"] = kube_version
    if api_versions:
        opts["api_versions"] = api_versions
    rendered = _native.call_string("helm_render", chart._raw(), json.dumps(values), json.dumps(opts))
    return json.loads(rendered)


def render_cluster(
    chart: helm.Chart, values: dict[str, Any], release: str, namespace: str, kubeconfig: str
) -> dict[str, str]:
    """`helm install --dry-run=server`: capabilities come from the cluster; nothing is created."""
    with helm.Config(kubeconfig_path=kubeconfig, namespace=namespace) as config:
        rel = config.install(chart, release, values, namespace=namespace, dry_run="server")
    by_template: dict[str, str] = {}
    for part in re.split(r"^---\s*$", rel.get("manifest", ""), flags=re.M):
        source = re.search(r"^# Source: (\S+)", part, flags=re.M)
        if source and part.strip():
            by_template[source.group(1)] = by_template.get(source.group(1), "") + "---\n" + part.strip() + "\n"
    notes = rel.get("info", {}).get("notes") if isinstance(rel.get("info"), dict) else None
    if notes:
        by_template[f"{chart.name}/templates/NOTES.txt"] = notes
    return by_template


def documents(text: str) -> list[dict[str, Any]]:
    """The YAML documents in `text`, parsed by Helm's YAML reader (no PyYAML needed)."""
    docs = []
    for part in re.split(r"^---\s*$", text, flags=re.M):
        body = "\n".join(line for line in part.splitlines() if not line.startswith("#")).strip()
        if body:
            docs.append(helm.values_from_yaml(body))
    return docs


def write_rendered(out: Path, chart: helm.Chart, by_template: dict[str, str]) -> list[dict[str, Any]]:
    if out.exists():
        shutil.rmtree(out)
    (out / "templates").mkdir(parents=True)
    (out / "crds").mkdir()
    manifest = []
    for crd in sorted(chart.crds, key=lambda c: c["filename"]):
        name = Path(crd["filename"]).name
        (out / "crds" / name).write_text(crd["data"])
        manifest.append(crd["data"].strip() + "\n")
    for path in sorted(by_template):
        text = by_template[path]
        name = path.split("/templates/", 1)[-1]
        if name == "NOTES.txt":
            (out / "NOTES.txt").write_text(text)
            continue
        if not documents(text):
            continue  # a disabled option renders nothing
        (out / "templates" / name).write_text(text)
        manifest.append(text.strip() + "\n")
    joined = "".join(part if part.startswith("---") else "---\n" + part for part in manifest)
    (out / "manifest.yaml").write_text(joined)
    return documents(joined)


def render(args: argparse.Namespace) -> list[dict[str, Any]]:
    values = values_for(args.set, args.values, args.set_json)
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)
        if args.kubeconfig:
            by_template = render_cluster(chart, values, args.release, args.namespace, args.kubeconfig)
        else:
            by_template = render_offline(
                chart, values, args.release, args.namespace, args.kube_version, args.api_version
            )
        docs = write_rendered(Path(args.out), chart, by_template)
    kinds = ", ".join(f"{d.get('kind')}/{d.get('metadata', {}).get('name')}" for d in docs)
    print(f"render_chart: {args.set} -> {args.out}: {kinds}", file=sys.stderr)
    return docs


# ---- lint and checks ----


def lint(value_set: str) -> list[str]:
    """helm lint --strict; returns the problems (warnings and errors)."""
    values = values_for(value_set, [], [])
    report = helm.lint(CHART, values or None, strict=True, namespace="roster")
    problems = [f"{m['path']}: {m['error'].strip()}" for m in report["messages"] if m["severity"] >= 2]
    problems += [e.strip() for e in report.get("errors", []) if e.strip() not in " ".join(problems)]
    return problems


def schema_paths(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref:
        target = root
        for part in ref.lstrip("#/").split("/"):
            target = target[part]
        return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def uncovered_values(values: Any, schema: dict[str, Any], root: dict[str, Any], path: str = "") -> list[str]:
    """Value keys the schema does not describe (every value in values.yaml needs a schema entry)."""
    schema = schema_paths(schema, root)
    if not isinstance(values, dict):
        return []
    missing = []
    props = schema.get("properties", {})
    for key, value in values.items():
        sub = props.get(key)
        if sub is None and isinstance(schema.get("additionalProperties"), dict):
            sub = schema["additionalProperties"]
        if sub is None:
            missing.append(f"{path}{key}")
        else:
            missing += uncovered_values(value, sub, root, f"{path}{key}.")
    return missing


def value_paths(values: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the values (maps are descended; a map whose keys are free, like labels, is one value)."""
    if not isinstance(values, dict) or not values:
        return [prefix.rstrip(".")]
    paths = []
    for key, value in values.items():
        free = key in {"labels", "annotations", "podAnnotations", "podLabels", "nodeSelector", "affinity",
                       "resources", "podSecurityContext", "securityContext", "global"}
        paths += [f"{prefix}{key}"] if free else value_paths(value, f"{prefix}{key}.")
    return paths


def documented_values(readme: str) -> set[str]:
    """Values named in the first column of the README's values table: `a.b`, and `.c` for a sibling of `a.b`."""
    names: set[str] = set()
    section = readme.split("## Values", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        parent = ""
        for token in re.findall(r"`([^`]+)`", line.split("|")[1]):
            name = parent + token if token.startswith(".") else token
            names.add(name.replace("..", "."))
            parent = name.rsplit(".", 1)[0] if "." in name else ""
    return names


def undocumented_values(values: dict[str, Any]) -> list[str]:
    readme = (CHART / "README.md").read_text()
    documented = documented_values(readme)
    return [path for path in value_paths(values) if path not in documented]


# Values the chart must refuse, and the message that says why.
BAD_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"controller": {"services": "everything"}}, "'/controller/services'"),
    ({"controller": {"service": "all"}}, "additional properties 'service' not allowed"),
    ({"controller": {"workers": 0}}, "'/controller/workers'"),
    ({"controller": {"probeDenyCIDRs": ["not a network"]}}, "'/controller/probeDenyCIDRs/0'"),
    ({"controller": {"batchWindow": "3d"}}, "'/controller/batchWindow'"),
    ({"log": {"format": "xml"}}, "'/log/format'"),
    ({"resources": {"limits": {"memory": "lots"}}}, "'/resources/limits/memory'"),
    ({"podDisruptionBudget": {"minAvailable": "half"}}, "'/podDisruptionBudget/minAvailable'"),
    ({"image": {"digest": "latest"}}, "'/image/digest'"),
    ({"extraArgs": ["workers=3"]}, "'/extraArgs/0'"),
    ({"controller": {"podCIDRs": ["pods"]}}, "'/controller/podCIDRs/0'"),
    ({"backendSets": {"dnsMaxTTL": "5 minutes"}}, "'/backendSets/dnsMaxTTL'"),
    ({"fullnameOverride": "Roster_Main"}, "'/fullnameOverride'"),
    ({"controller": {"writeQPS": 0}}, "'/controller/writeQPS'"),
]


def check_rejections(chart: helm.Chart) -> list[str]:
    failures = []
    for values, expected in BAD_VALUES:
        try:
            chart.validate_schema(values)
            failures.append(f"values.schema.json accepts {json.dumps(values)}")
        except helm.HelmValuesError as err:
            if expected not in str(err):
                failures.append(f"{json.dumps(values)} rejected without {expected!r}: {err}")
    try:
        render_offline(chart, {"leaderElection": {"enabled": False}}, "roster", "roster", None, [])
        failures.append("two replicas without leader election rendered (both would write)")
    except helm.HelmError as err:
        if "needs leaderElection.enabled" not in str(err):
            failures.append(f"two replicas without leader election failed for another reason: {err}")
    return failures


def by_kind(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    kinds: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        kinds.setdefault(doc.get("kind", "?"), []).append(doc)
    return kinds


def container_args(docs: list[dict[str, Any]]) -> list[str]:
    deployment = by_kind(docs)["Deployment"][0]
    return deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def bound_cluster_role(kinds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The ClusterRole roster's ClusterRoleBinding grants (the chart also renders roles for BackendSet users)."""
    name = kinds["ClusterRoleBinding"][0]["roleRef"]["name"]
    return next(role for role in kinds["ClusterRole"] if role["metadata"]["name"] == name)


def check_rendered(value_set: str, docs: list[dict[str, Any]], old_docs: list[dict[str, Any]]) -> list[str]:
    failures = []
    kinds = by_kind(docs)
    expected = {"CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                "RoleBinding", "Deployment", "Service", "PodDisruptionBudget"}
    if value_set == "all-on":
        expected |= {"ServiceMonitor", "ConfigMap", "PrometheusRule"}
    if set(kinds) != expected:
        failures.append(f"{value_set}: rendered kinds {sorted(kinds)}, expected {sorted(expected)}")
    for doc in docs:
        for rule in doc.get("rules", []):
            for field in ("apiGroups", "resources", "verbs"):
                if "*" in rule.get(field, []):
                    failures.append(f"{value_set}: wildcard in {doc['kind']} {doc['metadata']['name']}: {rule}")
    pdb = {d["apiVersion"] for d in kinds.get("PodDisruptionBudget", [])}
    old_pdb = {d["apiVersion"] for d in by_kind(old_docs).get("PodDisruptionBudget", [])}
    if pdb != {"policy/v1"}:
        failures.append(f"{value_set}: PodDisruptionBudget {pdb} on current Kubernetes, expected policy/v1")
    if old_pdb != {"policy/v1beta1"}:
        failures.append(f"{value_set}: PodDisruptionBudget {old_pdb} on {OLD_KUBE}, expected policy/v1beta1")
    args = container_args(docs)
    want = ["run", "--leader-elect=true", "--backendsets=true"]
    if value_set == "all-on":
        want += ["--services=all", "--namespace=apps", "--probe-deny-cidrs=10.0.0.0/8",
                 "--probe-deny-cidrs=fd00::/8", "--service-cidr=10.96.0.0/12", "--pod-cidr=10.244.0.0/16",
                 "--dns-failure-grace=1.5h", "--log-format=json", "--batch-window=200ms", "--workers=12"]
    else:
        want += ["--services=annotated", "--log-format=json"]
    failures += [f"{value_set}: the Deployment lacks {arg} in {args}" for arg in want if arg not in args]
    if value_set == "all-on":
        dashboard = kinds["ConfigMap"][0]["data"]["roster.json"]
        if json.loads(dashboard) != json.loads((CHART / "dashboards" / "roster.json").read_text()):
            failures.append("all-on: the dashboard ConfigMap differs from dashboards/roster.json")
        namespaced = [d for d in kinds["Role"] if d["metadata"]["namespace"] == "apps"]
        if not namespaced:
            failures.append("all-on: controller.namespace=apps grants no Role in namespace apps")
        cluster_resources = {r for rule in bound_cluster_role(kinds)["rules"] for r in rule["resources"]}
        if cluster_resources != {"nodes"}:
            failures.append(f"all-on: a namespace-restricted ClusterRole grants {cluster_resources}, not only nodes")
    return failures


def check_crd_copies() -> list[str]:
    top = {p.name: p.read_text() for p in (ROOT / "crds").glob("*.yaml")}
    chart = {p.name: p.read_text() for p in (CHART / "crds").glob("*.yaml")}
    if top != chart:
        return ["charts/roster/crds/ differs from crds/: run `cargo run --bin crdgen -- charts/roster/crds`"]
    return []


def check(args: argparse.Namespace) -> int:
    out = Path(args.out)
    failures: list[str] = []
    with helm.Chart.load(CHART) as chart:
        schema = chart.schema or {}
        failures += [f"values.schema.json does not describe {p}" for p in uncovered_values(chart.values, schema, schema)]
        failures += [f"README.md's values table lacks {p}" for p in undocumented_values(chart.values)]
        try:
            chart.validate_schema({})
            failures += check_rejections(chart)
        except helm.HelmError as err:
            failures.append(f"values.yaml does not pass values.schema.json: {err}")
    for value_set in VALUE_SETS:
        problems = lint(value_set)
        failures += [f"helm lint --strict ({value_set}): {p}" for p in problems]
        print(f"chart-check: helm lint --strict ({value_set}): {'ok' if not problems else 'FAILED'}", file=sys.stderr)
        base = argparse.Namespace(set=value_set, values=[], set_json=[], release="roster", namespace="roster",
                                  kubeconfig=None, kube_version=None, api_version=[], out=str(out / value_set))
        old = argparse.Namespace(**{**vars(base), "kube_version": OLD_KUBE, "out": str(out / f"{value_set}-kube-1.20")})
        try:
            docs, old_docs = render(base), render(old)
        except helm.HelmError as err:
            failures.append(f"rendering {value_set}: {type(err).__name__}: {err}")
            continue
        failures += check_rendered(value_set, docs, old_docs)
    failures += check_crd_copies()
    if failures:
        print("chart-check: FAILED", file=sys.stderr)
        for failure in failures:
            print(f"  - {failure}", file=sys.stderr)
        return 1
    print(f"chart-check: ok (helm {helm.helm_sdk_version()} via helm-python-sdk {helm.__version__}); "
          f"rendered into {out}", file=sys.stderr)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="render one value set into a directory")
    r.add_argument("--set", choices=VALUE_SETS, default="default", help="value set")
    r.add_argument("--values", action="append", default=[], help="extra values file (repeatable)")
    r.add_argument("--set-json", action="append", default=[], help="KEY=JSON override (repeatable)")
    r.add_argument("--release", default="roster")
    r.add_argument("--namespace", default="roster")
    r.add_argument("--kube-version", help="offline: the Kubernetes version to render for (helm template --kube-version)")
    r.add_argument("--api-version", action="append", default=[], help="offline: an extra served API (repeatable)")
    r.add_argument("--kubeconfig", help="render against this cluster (helm install --dry-run=server)")
    r.add_argument("--out", required=True)
    lint_cmd = sub.add_parser("lint", help="helm lint --strict one value set")
    lint_cmd.add_argument("--set", choices=VALUE_SETS, default="default")
    c = sub.add_parser("check", help="lint and render every value set, then check the output")
    c.add_argument("out", help="directory for the rendered manifests")
    args = parser.parse_args()
    try:
        if args.command == "render":
            render(args)
            return 0
        if args.command == "lint":
            problems = lint(args.set)
            for p in problems:
                print(f"helm lint: {p}", file=sys.stderr)
            return 1 if problems else 0
        return check(args)
    except helm.HelmError as err:
        print(f"render_chart: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
