"""What can be proven of infra/k8s without a cluster (`make lint`; docs/DECISIONS.md 74).

1. Every resource in `infra/k8s/*.yaml`, and the Job that the GPU pool's template
   (`train-gpu-job-template.json`) renders to, is checked against Kubernetes' own OpenAPI schemas in their
   strict form, for every minor version from MIN_VERSION to the newest the schemas ship: a misspelled or
   unknown field, a wrong type, a missing required field or an API version a release no longer serves is an
   error. The schemas come inside the pinned `kubernetes-validate` wheel: no cluster, no network.
2. What the schemas cannot express but a cluster would trip over: a Deployment's or Job's selector that does
   not select its own pods, a probe or Service naming a port no container declares, a Service that selects
   no pod, and a ConfigMap, ServiceAccount or Role referred to but defined nowhere here (Secrets are made by
   hand with `kubectl create secret`, as the manifests' comments say, so they are not looked for).

    .venv/bin/python infra/k8s/validate.py            # infra/k8s; exit 1 with one line per problem
    .venv/bin/python infra/k8s/validate.py FILE ...   # other files (tests/unit/test_k8s_validate.py)

Not proven here: that an API server admits them (admission webhooks, quotas, policies), that the images
exist, that a GPU node schedules the Job, or that the Secrets they name are there.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shlex
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
# The oldest Kubernetes minor the manifests must still apply to; every shipped minor from here on is checked.
MIN_VERSION = (1, 33)
# What a flow run's worker puts in where the template leaves it to Prefect: any values of the right type do.
RUN_VALUES = {"command": "prefect flow-run execute 00000000-0000-0000-0000-000000000000",
              "env": {"PREFECT_API_URL": "http://prefect-server.flowtune.svc.cluster.local:4200/api"}}

SCHEMAS = "kubernetes-json-schema"  # inside the kubernetes_validate package

Found = tuple[str, dict]  # (where it comes from, the resource)


def versions() -> list[str]:
    """The Kubernetes versions checked: every minor the installed schemas ship, from MIN_VERSION on."""
    from kubernetes_validate.utils import all_versions

    # all_versions() names each version twice (plain and strict schemas)
    chosen = sorted({v for v in all_versions() if tuple(int(p) for p in v.split(".")[:2]) >= MIN_VERSION},
                    key=lambda v: tuple(int(p) for p in v.split(".")))
    if not chosen:
        raise SystemExit(f"kubernetes-validate ships no schema for Kubernetes {MIN_VERSION} or later")
    return chosen


def render_job_template(template: dict) -> dict:
    """The Job a flow run of the pool gets: the variables' defaults put in as Prefect does, then what the
    Kubernetes worker does before it submits (prefect-kubernetes' `prepare_for_flow_run`): `env` becomes a
    list of name/value pairs, `args` a list split shell-wise, and `generateName` is kept."""
    from prefect.utilities.templating import apply_values

    properties = template["variables"]["properties"]
    values = {name: spec["default"] for name, spec in properties.items() if "default" in spec} | RUN_VALUES
    unknown = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", json.dumps(template["job_configuration"]))) - set(values)
    if unknown:
        raise ValueError(f"placeholders with no default and no run value: {sorted(unknown)}")
    manifest = apply_values(copy.deepcopy(template["job_configuration"]["job_manifest"]), values)
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    env = container.get("env")
    container["env"] = [{"name": k, "value": v} for k, v in values["env"].items()] + (
        env if isinstance(env, list) else [])
    if isinstance(container.get("args"), str):
        container["args"] = shlex.split(container["args"])
    return manifest


def load(paths: Iterable[Path]) -> list[Found]:
    resources: list[Found] = []
    for path in paths:
        if path.suffix == ".json":
            resources.append((f"{path.name} (rendered)", render_job_template(json.loads(path.read_text()))))
        else:
            for index, document in enumerate(yaml.safe_load_all(path.read_text())):
                if document is not None:
                    resources.append((f"{path.name}#{index}", document))
    return resources


def name_of(resource: dict) -> str:
    metadata = resource.get("metadata") or {}
    return f"{resource.get('kind')}/{metadata.get('name') or metadata.get('generateName') or '?'}"


@functools.cache
def _definitions(version: str):
    from kubernetes_validate.utils import schema_contents
    from referencing import Registry, Resource

    definitions = schema_contents(f"{SCHEMAS}/v{version}-local-strict/_definitions.json", version)
    return Resource.from_contents(definitions) @ Registry()


@functools.cache
def validator(version: str, kind: str, api_version: str):
    """jsonschema's validator for one kind in one Kubernetes version (strict: no field the API does not know),
    built as kubernetes-validate's `validate` builds it, but kept, and asked for every error rather than the
    first: a misspelled `containers` is reported as itself, not only as the missing field it leaves."""
    import jsonschema
    from kubernetes_validate.utils import schema_contents
    from referencing import Resource

    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)  # rbac.authorization.k8s.io/v1 -> rbac-v1
    try:
        schema = schema_contents(f"{SCHEMAS}/v{version}-local-strict/{kind.lower()}-{group}.json", version)
    except FileNotFoundError:
        return None
    registry = Resource.from_contents(schema) @ _definitions(version)
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def schema_problems(resources: list[Found], kubernetes_versions: list[str]) -> Iterator[str]:
    for where, resource in resources:
        if not {"apiVersion", "kind"} <= set(resource):
            yield f"{where}: not a Kubernetes resource (no apiVersion or kind)"
            continue
        for version in kubernetes_versions:
            check = validator(version, str(resource["kind"]), str(resource["apiVersion"]))
            if check is None:  # kubernetes-validate's CLI only warns here; a kind no release serves is an error
                yield (f"{where} {name_of(resource)}: Kubernetes {version} has no {resource['kind']} in "
                       f"{resource['apiVersion']}")
                break
            errors = sorted(check.iter_errors(resource), key=lambda e: [str(p) for p in e.path])
            for error in errors:
                path = ".".join(str(p) for p in error.path) or "(top)"
                yield f"{where} {name_of(resource)}: Kubernetes {version}: {path}: {error.message}"
            if errors:  # the same errors again for the next versions would say nothing new
                break


def pod_templates(resource: dict) -> list[dict]:
    """The pod templates of a workload (Deployment, Job, ...), or [] for anything else."""
    template = (resource.get("spec") or {}).get("template")
    return [template] if isinstance(template, dict) else []


def wiring_problems(resources: list[Found]) -> Iterator[str]:
    defined = {(r.get("kind"), (r.get("metadata") or {}).get("namespace"), (r.get("metadata") or {}).get("name"))
               for _, r in resources}
    pods = []  # (namespace, labels, declared port names)
    for where, resource in resources:
        namespace = (resource.get("metadata") or {}).get("namespace")
        for template in pod_templates(resource):
            labels = (template.get("metadata") or {}).get("labels") or {}
            selector = ((resource["spec"].get("selector") or {}).get("matchLabels")) or {}
            if any(labels.get(k) != v for k, v in selector.items()):
                yield f"{where} {name_of(resource)}: selector {selector} does not select its pods' labels {labels}"
            spec = template.get("spec") or {}
            containers = spec.get("containers") or []
            ports = {p.get("name") for c in containers for p in c.get("ports") or [] if p.get("name")}
            pods.append((namespace, labels, ports))
            for container in containers:
                for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                    action = (container.get(probe) or {})
                    port = (action.get("httpGet") or action.get("tcpSocket") or {}).get("port")
                    if isinstance(port, str) and port not in ports:
                        yield f"{where} {name_of(resource)}: {probe} port {port!r} is no declared container port"
                for source in container.get("envFrom") or []:
                    ref = (source.get("configMapRef") or {}).get("name")
                    if ref and not (source["configMapRef"].get("optional") or ("ConfigMap", namespace, ref) in defined):
                        yield f"{where} {name_of(resource)}: envFrom ConfigMap {ref!r} is defined nowhere here"
            account = spec.get("serviceAccountName")
            if account and ("ServiceAccount", namespace, account) not in defined:
                yield f"{where} {name_of(resource)}: ServiceAccount {account!r} is defined nowhere here"
    for where, resource in resources:
        namespace = (resource.get("metadata") or {}).get("namespace")
        if resource.get("kind") == "Service" and (selector := (resource.get("spec") or {}).get("selector")):
            matched = [ports for ns, labels, ports in pods
                       if ns == namespace and all(labels.get(k) == v for k, v in selector.items())]
            if not matched:
                yield f"{where} {name_of(resource)}: selector {selector} selects no pod defined here"
            for port in resource["spec"].get("ports") or []:
                target = port.get("targetPort")
                if isinstance(target, str) and matched and not any(target in ports for ports in matched):
                    yield f"{where} {name_of(resource)}: targetPort {target!r} is no port of the pods it selects"
        if resource.get("kind") == "RoleBinding":
            role = resource.get("roleRef") or {}
            if role.get("kind") == "Role" and ("Role", namespace, role.get("name")) not in defined:
                yield f"{where} {name_of(resource)}: Role {role.get('name')!r} is defined nowhere here"
            for subject in resource.get("subjects") or []:
                key = ("ServiceAccount", subject.get("namespace", namespace), subject.get("name"))
                if subject.get("kind") == "ServiceAccount" and key not in defined:
                    yield f"{where} {name_of(resource)}: ServiceAccount {subject.get('name')!r} is defined nowhere here"


def check(paths: Iterable[Path]) -> tuple[list[Found], list[str], list[str]]:
    """(the resources, the versions they were checked against, the problems found)."""
    resources = load(paths)
    kubernetes_versions = versions()
    # the wiring is looked at once the schemas pass: a field misspelled would show again as a missing link
    problems = list(schema_problems(resources, kubernetes_versions)) or list(wiring_problems(resources))
    if not resources:
        problems.append("no Kubernetes resource found: the check would prove nothing")
    return resources, kubernetes_versions, problems


def default_paths() -> list[Path]:
    return sorted(HERE.glob("*.yaml")) + sorted(HERE.glob("*job-template*.json"))


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or default_paths()
    try:
        resources, kubernetes_versions, problems = check(paths)
    except (ValueError, yaml.YAMLError) as error:  # a file that does not even load
        print(f"k8s: {error}", file=sys.stderr)
        return 1
    for problem in problems:
        print(f"k8s: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"k8s: {len(resources)} resources in {len(paths)} files valid against the strict schemas of Kubernetes "
          f"{kubernetes_versions[0]}..{kubernetes_versions[-1]}, and wired to each other")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
