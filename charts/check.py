#!/usr/bin/env python3
"""Offline validator for the pipeline-manager Kubernetes manifests.

It needs no cluster, no Docker and no helm binary: charts are rendered and linted
with helm-python-sdk (the Helm v4 SDK as a shared library), core kinds are
validated against the strict schemas bundled in kubernetes-validate, and the
ServiceMonitor / PrometheusRule / ScaledObject custom resources against the
cloudcoil pydantic models with unknown fields forbidden. On top of that it
checks pod security, probes, selectors and the metric names used in PromQL.
Install what it needs with `pip install -r charts/requirements.txt`.

    check.py chart DIR [--values FILE ...] [--name RELEASE] [--namespace NS]
    check.py charts ROOT
    check.py manifests FILE|-
    check.py same A B
    check.py promql-names FILE...
    check.py metrics-used --exported-metrics FILE FILE...
    check.py selftest [-v]

`--exported-metrics FILE` (any subcommand) lists the metric names the real
binaries export, one per line (or a whole Prometheus /metrics text); every
`pm_*` metric named by PromQL must be in it.

Exit status: 0 all good, 1 findings (one line each:
`SOURCE: KIND/NAME: PATH: MESSAGE`), 2 usage error or missing tool.
"""

from __future__ import annotations

import argparse
import codecs
import collections
import contextlib
import importlib
import importlib.resources
import importlib.util
import json
import os
import re
import sys
import tempfile
import textwrap
import time
import unittest
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Iterable, Iterator
from typing import Any

try:
    import yaml
except ImportError:  # reported as exit 2 by main()
    yaml = None  # type: ignore[assignment]

KUBE_VERSION = "1.32"  # schemas used by kubernetes-validate
LINT_KUBE_VERSION = "v1.32.0"  # what helm lint checks deprecations against
DEFAULT_RELEASE = "pm"
DEFAULT_NAMESPACE = "default"
REQUIREMENTS_HINT = "install them with: pip install -r charts/requirements.txt"

# Labels `same` ignores: they differ between a helm rendering and anything else.
VOLATILE_LABELS = ("app.kubernetes.io/managed-by", "helm.sh/chart")

# Where the pod spec lives, per workload kind.
POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
SCALABLE_KINDS = ("Deployment", "StatefulSet", "ReplicaSet")

# Custom resources validated with cloudcoil models: (apiVersion, kind) -> (module, class).
CRD_MODELS: dict[tuple[str, str], tuple[str, str]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ("cloudcoil.models.prometheus_operator.v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"): ("cloudcoil.models.prometheus_operator.v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"): ("cloudcoil.models.prometheus_operator.v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"): ("cloudcoil.models.keda.v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "ScaledJob"): ("cloudcoil.models.keda.v1alpha1", "ScaledJob"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"): ("cloudcoil.models.keda.v1alpha1", "TriggerAuthentication"),
    ("keda.sh/v1alpha1", "ClusterTriggerAuthentication"): (
        "cloudcoil.models.keda.v1alpha1",
        "ClusterTriggerAuthentication",
    ),
}


# --------------------------------------------------------------------------------------------------
# Findings, errors and small helpers
# --------------------------------------------------------------------------------------------------


class UsageError(Exception):
    """Bad command line or unreadable input: exit status 2."""


class ToolMissing(UsageError):
    """A required Python package (or the helm shared library) is not usable: exit status 2."""


@dataclass(frozen=True)
class Finding:
    """One problem: where it came from, which object, which field, what is wrong."""

    source: str
    obj: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.obj}: {self.path or '(document)'}: {one_line(self.message)}"


@dataclass
class Doc:
    """One manifest document of a stream, with where it came from."""

    source: str
    body: Any

    @property
    def kind(self) -> str:
        """The document's kind, or '' when it has none."""
        return str(self.body.get("kind") or "") if isinstance(self.body, dict) else ""

    @property
    def name(self) -> str:
        """metadata.name (or generateName), or '' when missing."""
        meta = self.body.get("metadata") if isinstance(self.body, dict) else None
        if not isinstance(meta, dict):
            return ""
        return str(meta.get("name") or meta.get("generateName") or "")

    @property
    def label(self) -> str:
        """`Kind/name`, as findings name objects."""
        return f"{self.kind or '?'}/{self.name or '?'}"

    def finding(self, path: Iterable[Any], message: str) -> Finding:
        """A finding about this document at `path` (a sequence of keys and indexes)."""
        return Finding(self.source, self.label, fmt_path(path), message)


def one_line(text: str) -> str:
    """Collapses a (possibly multi-line) message into one line."""
    return " ".join(str(text).split())


def fmt_path(parts: Iterable[Any]) -> str:
    """Formats ('spec', 'containers', 0, 'image') as spec.containers[0].image."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def dig(obj: Any, *keys: Any) -> Any:
    """obj[k1][k2]... or None as soon as a level is missing or of the wrong type."""
    for key in keys:
        if isinstance(key, int):
            if not isinstance(obj, list) or key >= len(obj):
                return None
        elif not isinstance(obj, dict):
            return None
        obj = obj[key] if isinstance(key, int) else obj.get(key)
    return obj


def as_list(value: Any) -> list[Any]:
    """The value if it is a list, else an empty list (schema errors are reported elsewhere)."""
    return value if isinstance(value, list) else []


def as_dict(value: Any) -> dict[str, Any]:
    """The value if it is a mapping, else an empty one."""
    return value if isinstance(value, dict) else {}


REQUIRED_MODULES = ("yaml", "jsonschema", "referencing", "kubernetes_validate", "pydantic", "helm_python",
                    "cloudcoil.models.keda", "cloudcoil.models.prometheus_operator")


def preflight(modules: Iterable[str] = REQUIRED_MODULES) -> None:
    """Raises ToolMissing naming every required module that cannot be found (without importing
    the slow ones)."""
    missing = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if not found:
            missing.append(module)
    if missing:
        raise ToolMissing(f"Python modules not available: {', '.join(missing)}; {REQUIREMENTS_HINT}")


def require(module: str) -> Any:
    """Imports a module or raises ToolMissing naming it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ToolMissing(f"Python module {module} is not available ({e}); {REQUIREMENTS_HINT}") from e


# --------------------------------------------------------------------------------------------------
# YAML streams
# --------------------------------------------------------------------------------------------------


def _make_loader() -> type:
    """A safe YAML loader closer to what Kubernetes sees: timestamps stay strings, `=` is a plain
    scalar (PyYAML issue 89), and duplicate mapping keys are errors instead of silently dropped."""
    if yaml is None:
        raise ToolMissing(f"Python module yaml (PyYAML) is not available; {REQUIREMENTS_HINT}")
    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class StreamLoader(base):  # type: ignore[misc, valid-type]
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, (str, int, float, bool)) and key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    StreamLoader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))
    StreamLoader.add_constructor("tag:yaml.org,2002:map", StreamLoader.construct_yaml_map)
    StreamLoader.yaml_implicit_resolvers = {
        ch: [r for r in resolvers if r[0] != "tag:yaml.org,2002:timestamp"]
        for ch, resolvers in base.yaml_implicit_resolvers.items()
    }
    return StreamLoader


_LOADER: type | None = None


def yaml_load_all(text: str) -> list[Any]:
    """Parses every document of a YAML text with the Kubernetes-like loader."""
    global _LOADER
    if _LOADER is None:
        _LOADER = _make_loader()
    return list(yaml.load_all(text, Loader=_LOADER))


_DOC_MARKER = re.compile(r"^---(?:[ \t]|$)")
_SOURCE_COMMENT = re.compile(r"^#\s*Source:\s*(\S.*?)\s*$")


def split_stream(text: str) -> list[tuple[int, str]]:
    """Splits a multi-document YAML text at `---` lines: [(first line number, chunk)]."""
    chunks: list[tuple[int, str]] = []
    start = 1
    current: list[str] = []
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        if _DOC_MARKER.match(line) and current:
            chunks.append((start, "".join(current)))
            start, current = number, []
        current.append(line)
    if current:
        chunks.append((start, "".join(current)))
    return chunks


def parse_stream(text: str, source: str) -> tuple[list[Doc], list[Finding]]:
    """Parses a YAML stream into documents (empty ones skipped). Each document's source is
    `source:LINE`, plus the template named by a `# Source:` comment when there is one."""
    docs: list[Doc] = []
    findings: list[Finding] = []
    for line, chunk in split_stream(text):
        origin = next((m.group(1) for m in map(_SOURCE_COMMENT.match, chunk.splitlines()) if m), None)
        where = f"{source}:{line}" + (f" ({origin})" if origin else "")
        try:
            parsed = yaml_load_all("\n" * (line - 1) + chunk)  # padded: error marks give file lines
        except yaml.YAMLError as e:
            findings.append(Finding(where, "-", "", f"invalid YAML: {yaml_error_text(e)}"))
            continue
        docs.extend(Doc(where, body) for body in parsed if body is not None)
    return docs, findings


def yaml_error_text(error: Exception) -> str:
    """A PyYAML error as one short sentence with its line and column."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    context = getattr(error, "context", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}" + (f" ({context})" if context else "")


def read_text(path: str) -> str:
    """Reads a file (or stdin for '-'), turning errors into usage errors."""
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from e


# --------------------------------------------------------------------------------------------------
# Schema validation: core kinds (kubernetes-validate) and custom resources (cloudcoil)
# --------------------------------------------------------------------------------------------------


class CoreSchemas:
    """The strict JSON schemas bundled in kubernetes-validate, loaded once per process.

    Same schema selection as `kubernetes_validate.validate(doc, version, strict=True)` (latest
    bundled version not newer than the one asked, apiVersion group domain dropped), but the
    1.3 MB definitions file is parsed once, validators are cached per kind, and every error
    is reported instead of only the first."""

    def __init__(self, kube_version: str = KUBE_VERSION, strict: bool = True) -> None:
        kvu = require("kubernetes_validate.utils")
        self.jsonschema = require("jsonschema")
        self.referencing = require("referencing")
        wanted = kvu.major_minor(kube_version.lstrip("v"))
        usable = [v for v in kvu.all_versions() if _version_key(kvu.major_minor(v)) <= _version_key(wanted)]
        if not usable:
            raise ToolMissing(f"kubernetes-validate bundles no schemas for Kubernetes {kube_version}")
        self.version = kvu.major_minor(usable[-1])
        suffix = "-local-strict" if strict else "-local"
        root = importlib.resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")
        self.dir = Path(str(root)) / f"v{usable[-1]}{suffix}"
        self._registry: Any = None
        self._validators: dict[tuple[str, str], Any] = {}

    def _load(self, name: str) -> Any:
        return json.loads((self.dir / name).read_text())

    def validator(self, api_version: str, kind: str) -> Any:
        """The cached validator for a top-level kind, or None when there is no schema for it."""
        key = (api_version, kind)
        if key not in self._validators:
            mangled = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
            path = self.dir / f"{kind.lower()}-{mangled}.json"
            validator = None
            if path.is_file():
                schema = self._load(path.name)
                if "x-kubernetes-group-version-kind" in schema:  # a resource, not e.g. DeploymentSpec
                    if self._registry is None:
                        defs = self.referencing.Resource.from_contents(self._load("_definitions.json"))
                        self._registry = defs @ self.referencing.Registry()
                    registry = self.referencing.Resource.from_contents(schema) @ self._registry
                    validator = self.jsonschema.Draft202012Validator(schema, registry=registry)
            self._validators[key] = validator
        return self._validators[key]

    def errors(self, doc: dict[str, Any]) -> list[tuple[str, str]] | None:
        """[(path, message)] for a document, or None when there is no schema for its kind."""
        validator = self.validator(str(doc.get("apiVersion")), str(doc.get("kind")))
        if validator is None:
            return None
        out = []
        for error in sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path]):
            message = error.message
            if error.context:
                best = self.jsonschema.exceptions.best_match(error.context)
                message += f" ({fmt_path(best.absolute_path) or 'value'}: {best.message})"
            out.append((fmt_path(error.absolute_path), message))
        return out


def _version_key(version: str) -> tuple[int, ...]:
    """'1.32' -> (1, 32), for comparing Kubernetes minor versions."""
    return tuple(int(p) for p in re.findall(r"\d+", version))


class CrdModels:
    """cloudcoil pydantic models for the custom resources we ship, imported on first use
    (the prometheus-operator models take ~2 s to import)."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, str], Any] = {}

    @staticmethod
    def known(api_version: str, kind: str) -> bool:
        """Whether this custom resource has a model."""
        return (api_version, kind) in CRD_MODELS

    def model(self, api_version: str, kind: str) -> Any:
        """The pydantic model class for a custom resource (None when unknown)."""
        key = (api_version, kind)
        if key not in CRD_MODELS:
            return None
        if key not in self._models:
            module, cls = CRD_MODELS[key]
            self._models[key] = getattr(require(module), cls)
        return self._models[key]

    def errors(self, doc: dict[str, Any]) -> list[tuple[str, str]] | None:
        """[(path, message)] from validating with unknown fields forbidden and no type coercion
        (JSON mode, so RFC 3339 strings still parse as datetimes); None when there is no model."""
        model = self.model(str(doc.get("apiVersion")), str(doc.get("kind")))
        if model is None:
            return None
        pydantic = require("pydantic")
        try:
            model.model_validate_json(json.dumps(doc, default=str), extra="forbid", strict=True)
        except pydantic.ValidationError as e:
            return [(fmt_path(err["loc"]), err["msg"]) for err in e.errors()]
        return []


# --------------------------------------------------------------------------------------------------
# Per-document checks
# --------------------------------------------------------------------------------------------------


def check_structure(doc: Doc) -> list[Finding]:
    """A document must be a mapping with apiVersion, kind and metadata.name (or generateName)."""
    body = doc.body
    if not isinstance(body, dict):
        return [doc.finding([], f"document is a {type(body).__name__}, not a mapping")]
    out = []
    for key in ("apiVersion", "kind"):
        if not isinstance(body.get(key), str) or not body.get(key):
            out.append(doc.finding([key], "missing (every object needs apiVersion and kind)"))
    if not doc.name:
        out.append(doc.finding(["metadata", "name"], "missing"))
    return out


def check_schema(doc: Doc, core: CoreSchemas, crds: CrdModels) -> list[Finding]:
    """Validates a document against its schema; a kind without any schema is itself a finding."""
    api_version, kind = str(doc.body["apiVersion"]), str(doc.body["kind"])
    errors = crds.errors(doc.body) if crds.known(api_version, kind) else core.errors(doc.body)
    if errors is None:
        return [doc.finding(["kind"], f"no schema for {kind} ({api_version}): nothing passes unchecked")]
    return [Finding(doc.source, doc.label, path, message) for path, message in errors]


def pod_spec(doc: Doc) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """(path, pod spec) of a workload document, None for other kinds."""
    path = POD_SPEC_PATHS.get(doc.kind)
    if path is None:
        return None
    return path, as_dict(dig(doc.body, *path))


def pod_template_labels(doc: Doc) -> dict[str, Any]:
    """The labels the pods of a workload get (a Pod's own labels)."""
    path = POD_SPEC_PATHS[doc.kind][:-1] + ("metadata", "labels")
    if doc.kind == "Pod":
        path = ("metadata", "labels")
    return as_dict(dig(doc.body, *path))


def containers(spec: dict[str, Any]) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(field, index, container) for initContainers then containers of a pod spec."""
    for field_name in ("initContainers", "containers"):
        for index, container in enumerate(as_list(spec.get(field_name))):
            if isinstance(container, dict):
                yield field_name, index, container


def check_pod_security(doc: Doc) -> list[Finding]:
    """Pod-level hardening: non-root, RuntimeDefault seccomp, no service account token, no host
    namespaces or hostPath; then every container (see check_container)."""
    located = pod_spec(doc)
    if located is None:
        return []
    prefix, spec = located
    out = []
    psc = as_dict(spec.get("securityContext"))
    sc_path = prefix + ("securityContext",)
    if psc.get("runAsNonRoot") is not True:
        out.append(doc.finding(sc_path + ("runAsNonRoot",), "must be true"))
    if dig(psc, "seccompProfile", "type") != "RuntimeDefault":
        out.append(doc.finding(sc_path + ("seccompProfile", "type"), "must be RuntimeDefault"))
    if psc.get("runAsUser") == 0:
        out.append(doc.finding(sc_path + ("runAsUser",), "must not be 0 (root)"))
    if spec.get("automountServiceAccountToken") is not False:
        out.append(doc.finding(prefix + ("automountServiceAccountToken",), "must be false"))
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key) is True:
            out.append(doc.finding(prefix + (key,), "must not be true"))
    for index, volume in enumerate(as_list(spec.get("volumes"))):
        if isinstance(volume, dict) and "hostPath" in volume:
            out.append(doc.finding(prefix + ("volumes", index, "hostPath"),
                                   f"hostPath volume {volume.get('name')!r} is not allowed"))
    for field_name, index, container in containers(spec):
        out.extend(check_container(doc, prefix + (field_name, index), container, psc,
                                   init=field_name == "initContainers"))
    return out


def check_container(doc: Doc, path: tuple[Any, ...], c: dict[str, Any], psc: dict[str, Any],
                    init: bool) -> list[Finding]:
    """Container hardening, resources, image pinning (long-running only) and probes (not init)."""
    who = f"({'init container' if init else 'container'} {c.get('name')!r})"
    sc = as_dict(c.get("securityContext"))
    sp = path + ("securityContext",)
    out = []

    def flag(subpath: tuple[Any, ...], message: str) -> None:
        out.append(doc.finding(subpath, f"{message} {who}"))

    if sc.get("allowPrivilegeEscalation") is not False:
        flag(sp + ("allowPrivilegeEscalation",), "must be false")
    if sc.get("readOnlyRootFilesystem") is not True:
        flag(sp + ("readOnlyRootFilesystem",), "must be true")
    if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
        flag(sp + ("runAsNonRoot",), "must be true (here or in the pod securityContext)")
    if sc.get("runAsUser") == 0:
        flag(sp + ("runAsUser",), "must not be 0 (root)")
    if "ALL" not in as_list(dig(sc, "capabilities", "drop")):
        flag(sp + ("capabilities", "drop"), "must contain ALL")
    if sc.get("privileged") is True:
        flag(sp + ("privileged",), "must not be true")
    if dig(sc, "seccompProfile", "type") not in (None, "RuntimeDefault", "Localhost"):
        flag(sp + ("seccompProfile", "type"), "must not weaken the pod's RuntimeDefault seccomp profile")
    out.extend(doc.finding(p, f"{m} {who}") for p, m in resource_problems(path + ("resources",), c.get("resources")))
    if not init or c.get("restartPolicy") == "Always":
        problem = image_problem(c.get("image"))
        if problem:
            flag(path + ("image",), problem)
    if not init:
        for probe in ("readinessProbe", "livenessProbe"):
            if not isinstance(c.get(probe), dict):
                flag(path + (probe,), "missing")
    out.extend(doc.finding(p, f"{m} {who}") for p, m in probe_port_problems(path, c))
    return out


def image_problem(image: Any) -> str | None:
    """Why an image reference is not pinned (None when it is): missing, untagged or `latest`.
    A digest (`@sha256:...`) pins an untagged image."""
    if not isinstance(image, str) or not image.strip():
        return "image missing"
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else None
    if tag == "":
        return f"image {image!r} has an empty tag"
    if tag == "latest":
        return f"image {image!r} is tagged latest"
    if tag is None and not digest:
        return f"image {image!r} is untagged (means latest)"
    return None


_QUANTITY = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(?:[eE]([+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$")
_QUANTITY_SUFFIX = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
                    "E": 1e18, "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50,
                    "Ei": 2.0**60}


def parse_quantity(value: Any) -> float | None:
    """A Kubernetes resource quantity ('500m', '64Mi', 1, '1e3') as a number; None if invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    match = _QUANTITY.match(str(value).strip())
    if not match:
        return None
    number, exponent, suffix = match.groups()
    scale = 10.0 ** int(exponent) if exponent else _QUANTITY_SUFFIX.get(suffix or "", 1.0)
    return float(number) * scale


def resource_problems(path: tuple[Any, ...], resources: Any) -> list[tuple[tuple[Any, ...], str]]:
    """cpu and memory requests and limits must be set, valid quantities, and requests <= limits
    (the API server rejects a request above its limit)."""
    res = as_dict(resources)
    out = []
    for section in ("requests", "limits"):
        values = as_dict(res.get(section))
        for name in ("cpu", "memory"):
            if values.get(name) in (None, ""):
                out.append((path + (section, name), "must be set"))
        for name, value in values.items():
            if parse_quantity(value) is None:
                out.append((path + (section, name), f"{value!r} is not a valid quantity"))
    requests, limits = as_dict(res.get("requests")), as_dict(res.get("limits"))
    for name in set(requests) & set(limits):
        req, lim = parse_quantity(requests[name]), parse_quantity(limits[name])
        if req is not None and lim is not None and req > lim:
            out.append((path + ("requests", name), f"{requests[name]} is above the limit {limits[name]}"))
    return out


def container_port_names(c: dict[str, Any]) -> set[str]:
    """Names of a container's declared ports."""
    return {str(p["name"]) for p in as_list(c.get("ports")) if isinstance(p, dict) and p.get("name")}


def probe_port_problems(path: tuple[Any, ...], c: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    """A probe's httpGet/tcpSocket port given by name must be one of the container's port names."""
    names = container_port_names(c)
    out = []
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        for handler in ("httpGet", "tcpSocket"):
            port = dig(c, probe, handler, "port")
            if isinstance(port, str) and port not in names:
                out.append((path + (probe, handler, "port"),
                            f"names port {port!r} but the container declares {sorted(names) or 'no named ports'}"))
    return out


# --------------------------------------------------------------------------------------------------
# Checks across the documents of one stream (selectors and references)
# --------------------------------------------------------------------------------------------------


@dataclass
class PodTemplate:
    """A workload's pods as seen by selectors: labels and container port names."""

    doc: Doc
    labels: dict[str, Any]
    port_names: set[str]


def pod_templates(docs: list[Doc]) -> list[PodTemplate]:
    """Every pod template (and bare Pod) of a stream."""
    out = []
    for doc in docs:
        located = pod_spec(doc)
        if located is not None:
            names = set().union(*(container_port_names(c) for _, _, c in containers(located[1])))
            out.append(PodTemplate(doc, pod_template_labels(doc), names))
    return out


def selector_matches(selector: Any, labels: dict[str, Any]) -> bool:
    """Whether a LabelSelector ({matchLabels, matchExpressions}) matches labels; {} matches all."""
    selector = as_dict(selector)
    for key, value in as_dict(selector.get("matchLabels")).items():
        if labels.get(key) != value:
            return False
    for expr in as_list(selector.get("matchExpressions")):
        key, op, values = expr.get("key"), expr.get("operator"), as_list(expr.get("values"))
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def map_selector_matches(selector: dict[str, Any], labels: dict[str, Any]) -> bool:
    """Whether a plain map selector (Service spec.selector) matches labels."""
    return all(labels.get(k) == v for k, v in selector.items())


def check_workload_selector(doc: Doc) -> list[Finding]:
    """A workload's spec.selector must match its own pod template (the API server rejects it)."""
    if doc.kind not in POD_SPEC_PATHS or doc.kind in ("Pod", "CronJob"):
        return []
    selector = dig(doc.body, "spec", "selector")
    if selector is None or selector_matches(selector, pod_template_labels(doc)):
        return []
    return [doc.finding(["spec", "selector"], "does not match the pod template's labels")]


def check_services(docs: list[Doc], templates: list[PodTemplate]) -> list[Finding]:
    """A Service selector must select some pod template of the stream, and a named targetPort
    must be a container port name of a selected pod."""
    out = []
    for doc in docs:
        if doc.kind != "Service" or not templates:
            continue
        selector = as_dict(dig(doc.body, "spec", "selector"))
        if not selector:
            continue
        selected = [t for t in templates if map_selector_matches(selector, t.labels)]
        if not selected:
            out.append(doc.finding(["spec", "selector"], f"{selector} selects no pod template in this stream"))
            continue
        names = set().union(*(t.port_names for t in selected))
        for index, port in enumerate(as_list(dig(doc.body, "spec", "ports"))):
            target = as_dict(port).get("targetPort")
            if isinstance(target, str) and target not in names:
                out.append(doc.finding(["spec", "ports", index, "targetPort"],
                                       f"{target!r} is not a container port name of the selected pods "
                                       f"({sorted(names)})"))
    return out


def check_pod_selectors(docs: list[Doc], templates: list[PodTemplate]) -> list[Finding]:
    """NetworkPolicy podSelector and PodDisruptionBudget selector must select some pod template;
    a NetworkPolicy ingress port given by name must be a container port name of a selected pod."""
    out: list[Finding] = []
    if not templates:
        return out
    for doc in docs:
        if doc.kind == "NetworkPolicy":
            path = ["spec", "podSelector"]
        elif doc.kind == "PodDisruptionBudget":
            path = ["spec", "selector"]
        else:
            continue
        selector = dig(doc.body, *path)
        selected = [t for t in templates if selector_matches(selector, t.labels)]
        if not selected:
            out.append(doc.finding(path, f"{selector} selects no pod template in this stream"))
            continue
        if doc.kind != "NetworkPolicy":
            continue
        names = set().union(*(t.port_names for t in selected))
        for i, rule in enumerate(as_list(dig(doc.body, "spec", "ingress"))):
            for j, port in enumerate(as_list(as_dict(rule).get("ports"))):
                name = as_dict(port).get("port")
                if isinstance(name, str) and name not in names:
                    out.append(doc.finding(["spec", "ingress", i, "ports", j, "port"],
                                           f"{name!r} is not a container port name of the selected pods "
                                           f"({sorted(names)})"))
    return out


def check_scale_targets(docs: list[Doc]) -> list[Finding]:
    """A HorizontalPodAutoscaler's or ScaledObject's scaleTargetRef must name a workload of the
    stream (when the stream has workloads at all)."""
    workloads = {(d.kind, d.name) for d in docs if d.kind in SCALABLE_KINDS}
    out: list[Finding] = []
    if not workloads:
        return out
    for doc in docs:
        if doc.kind not in ("HorizontalPodAutoscaler", "ScaledObject"):
            continue
        ref = as_dict(dig(doc.body, "spec", "scaleTargetRef"))
        target = (ref.get("kind") or "Deployment", ref.get("name"))
        if target not in workloads:
            out.append(doc.finding(["spec", "scaleTargetRef"], f"{target[0]}/{target[1]} is not in this stream"))
    return out


def monitor_targets(doc: Doc, services: list[Doc], templates: list[PodTemplate]) -> tuple[int, set[str], str] | None:
    """(objects selected, their port names, endpoints field) for a ServiceMonitor (Services of the
    stream) or a PodMonitor (pod templates); None for other kinds or when there is nothing to select."""
    selector = dig(doc.body, "spec", "selector")
    if doc.kind == "ServiceMonitor" and services:
        chosen = [s for s in services if selector_matches(selector, as_dict(dig(s.body, "metadata", "labels")))]
        names = {str(p["name"]) for s in chosen for p in as_list(dig(s.body, "spec", "ports"))
                 if isinstance(p, dict) and p.get("name")}
        return len(chosen), names, "endpoints"
    if doc.kind == "PodMonitor" and templates:
        pods = [t for t in templates if selector_matches(selector, t.labels)]
        return len(pods), set().union(*(t.port_names for t in pods)), "podMetricsEndpoints"
    return None


def check_monitors(docs: list[Doc], templates: list[PodTemplate]) -> list[Finding]:
    """A ServiceMonitor must select a Service of the stream and scrape one of its named ports;
    a PodMonitor must select a pod template and scrape one of its container port names."""
    services = [d for d in docs if d.kind == "Service"]
    out: list[Finding] = []
    for doc in docs:
        targets = monitor_targets(doc, services, templates)
        if targets is None:
            continue
        count, names, endpoints = targets
        if not count:
            out.append(doc.finding(["spec", "selector"], "selects nothing in this stream"))
            continue
        for index, endpoint in enumerate(as_list(dig(doc.body, "spec", endpoints))):
            port = as_dict(endpoint).get("port")
            if isinstance(port, str) and port not in names:
                out.append(doc.finding(["spec", endpoints, index, "port"],
                                       f"{port!r} is not a port name of the selected objects ({sorted(names)})"))
    return out


def check_duplicates(docs: list[Doc]) -> list[Finding]:
    """Two documents for the same object: helm refuses to install them."""
    seen: dict[tuple[str, str, str, str], Doc] = {}
    out = []
    for doc in docs:
        group = str(doc.body.get("apiVersion", "")).rpartition("/")[0]
        key = (group, doc.kind, str(dig(doc.body, "metadata", "namespace") or ""), doc.name)
        if key in seen:
            out.append(doc.finding(["metadata", "name"], f"duplicate of the object at {seen[key].source}"))
        else:
            seen[key] = doc
    return out


# --------------------------------------------------------------------------------------------------
# PromQL: metric names referenced by an expression
# --------------------------------------------------------------------------------------------------


class PromQLError(ValueError):
    """An expression the tokenizer cannot make sense of."""


PROMQL_AGGREGATIONS = frozenset(
    "sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio".split()
)
PROMQL_FUNCTIONS = frozenset("""
    abs absent absent_over_time ceil changes clamp clamp_max clamp_min day_of_month day_of_week day_of_year
    days_in_month delta deriv double_exponential_smoothing exp floor histogram_avg histogram_count
    histogram_fraction histogram_quantile histogram_stddev histogram_stdvar histogram_sum holt_winters hour
    idelta increase info irate label_join label_replace ln log2 log10 minute month predict_linear rate resets
    round scalar sgn sort sort_desc sort_by_label sort_by_label_desc sqrt time timestamp vector year
    avg_over_time min_over_time max_over_time sum_over_time count_over_time quantile_over_time
    stddev_over_time stdvar_over_time last_over_time present_over_time mad_over_time first_over_time
    ts_of_max_over_time ts_of_min_over_time ts_of_last_over_time ts_of_first_over_time
    acos acosh asin asinh atan atanh cos cosh sin sinh tan tanh deg rad pi start end step
""".split())
PROMQL_GROUPING = frozenset("by without on ignoring group_left group_right".split())
PROMQL_KEYWORDS = frozenset("and or unless bool offset atan2 inf nan smoothed anchored".split())

_PROMQL_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`)
  | (?P<var>\$\{[^}]*\}|\$[a-zA-Z_][a-zA-Z0-9_]*|\[\[[^\]]*\]\])
  | (?P<duration>\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*(?![a-zA-Z0-9_:]))
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^<>=,@:])
  | (?P<open>[({\[])
  | (?P<close>[)}\]])
""", re.VERBOSE)


def promql_tokens(expr: str) -> list[tuple[str, str]]:
    """Splits PromQL into (kind, text) tokens: string, var (Grafana $var), duration, number,
    ident, op, open, close. Whitespace and # comments are dropped."""
    tokens, pos = [], 0
    while pos < len(expr):
        match = _PROMQL_TOKEN.match(expr, pos)
        if not match:
            raise PromQLError(f"unexpected {expr[pos:pos + 10]!r} at offset {pos}")
        kind = match.lastgroup or ""
        if kind not in ("ws", "comment"):
            tokens.append((kind, match.group()))
        pos = match.end()
    return tokens


def _unquote(token: str) -> str:
    """The value of a PromQL string literal."""
    body = token[1:-1]
    return body if token[0] == "`" else codecs.decode(body, "unicode_escape")


def _skip_until(tokens: list[tuple[str, str]], i: int, close: str, allowed: set[str]) -> int:
    """Index after the `close` token that ends a list starting at i, checking token kinds."""
    while i < len(tokens):
        kind, text = tokens[i]
        if kind == "close" and text == close:
            return i + 1
        if kind not in allowed:
            raise PromQLError(f"unexpected {text!r} before {close!r}")
        i += 1
    raise PromQLError(f"missing {close!r}")


def _parse_matchers(tokens: list[tuple[str, str]], i: int, names: dict[str, None]) -> int:
    """Reads label matchers after '{' up to '}'; `__name__="x"` and a bare quoted name (Prometheus 3)
    name a metric. Returns the index after '}'."""
    label: tuple[str, str] | None = None
    op: str | None = None
    while i < len(tokens):
        kind, text = tokens[i]
        if (kind == "close" and text == "}") or (kind == "op" and text == ","):
            if label and label[0] == "string" and op is None:
                names.setdefault(_unquote(label[1]))
            label, op = None, None
            if kind == "close":
                return i + 1
        elif label is None and kind in ("ident", "string"):
            label = (kind, text)
        elif label is not None and op is None and kind == "op" and text in ("=", "!=", "=~", "!~"):
            op = text
        elif label is not None and op is not None and kind in ("string", "var"):
            if label == ("ident", "__name__") and op == "=" and kind == "string":
                names.setdefault(_unquote(text))
        else:
            raise PromQLError(f"unexpected {text!r} in label matchers")
        i += 1
    raise PromQLError("missing '}'")


def promql_metric_names(expr: str) -> list[str]:
    """Metric names an expression reads, in order of first use: identifiers that are not
    keywords, functions or aggregations, outside label matchers, grouping label lists and
    [range] brackets. Raises PromQLError on unbalanced brackets, unknown characters or a call
    of an unknown function."""
    tokens = promql_tokens(expr)
    names: dict[str, None] = {}
    depth, i = 0, 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else None
        if kind == "open" and text == "{":
            i = _parse_matchers(tokens, i + 1, names)
            continue
        if kind == "open" and text == "[":
            i = _skip_until(tokens, i + 1, "]", {"duration", "number", "var", "op", "ident"})
            continue
        if kind == "open":
            depth += 1
        elif kind == "close":
            if text != ")" or depth == 0:
                raise PromQLError(f"unbalanced {text!r}")
            depth -= 1
        elif kind == "ident":
            word = text.lower()
            if word in PROMQL_GROUPING:
                if following == ("open", "("):
                    i = _skip_until(tokens, i + 2, ")", {"ident", "string", "op"})
                    continue
            elif word in PROMQL_KEYWORDS or word in PROMQL_AGGREGATIONS or word in PROMQL_FUNCTIONS:
                pass
            elif following == ("open", "("):
                raise PromQLError(f"unknown function {text!r}")
            else:
                names.setdefault(text)
        i += 1
    if depth:
        raise PromQLError("missing ')'")
    return list(names)


# --------------------------------------------------------------------------------------------------
# Where PromQL lives: manifests, Prometheus rule files, Grafana dashboards
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromQLUse:
    """One PromQL expression and where it was found."""

    source: str
    obj: str
    path: str
    expr: str


def manifest_promql(doc: Doc) -> tuple[list[PromQLUse], list[Finding]]:
    """Expressions of a ScaledObject/ScaledJob prometheus trigger (query) and of a
    PrometheusRule (expr); a prometheus trigger without a query is a finding."""
    uses, findings = [], []
    if doc.kind in ("ScaledObject", "ScaledJob"):
        for i, trigger in enumerate(as_list(dig(doc.body, "spec", "triggers"))):
            if as_dict(trigger).get("type") != "prometheus":
                continue
            query = dig(trigger, "metadata", "query")
            path = ["spec", "triggers", i, "metadata", "query"]
            if not isinstance(query, str) or not query.strip():
                findings.append(doc.finding(path, "a prometheus trigger needs a query"))
            else:
                uses.append(PromQLUse(doc.source, doc.label, fmt_path(path), query))
    elif doc.kind == "PrometheusRule":
        for use in rule_groups_promql(as_list(dig(doc.body, "spec", "groups")), doc.source, ("spec", "groups")):
            uses.append(PromQLUse(use.source, f"{doc.label} {use.obj}", use.path, use.expr))
    return uses, findings


def rule_groups_promql(groups: list[Any], source: str, prefix: tuple[Any, ...]) -> list[PromQLUse]:
    """groups[].rules[].expr of Prometheus rules, each labelled `alert NAME` or `record NAME`."""
    uses = []
    for g, group in enumerate(groups):
        for r, rule in enumerate(as_list(as_dict(group).get("rules"))):
            rule = as_dict(rule)
            if "expr" in rule:
                what = f"alert {rule['alert']}" if "alert" in rule else f"record {rule.get('record')}"
                uses.append(PromQLUse(source, what, fmt_path(prefix + (g, "rules", r, "expr")), str(rule["expr"])))
    return uses


def recorded_names(docs: Iterable[Any]) -> set[str]:
    """Names defined by recording rules (`record:`) anywhere in rule files or PrometheusRules."""
    out: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("record"), str) and "expr" in node:
                out.add(node["record"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for doc in docs:
        walk(doc)
    return out


def dashboard_promql(dashboard: dict[str, Any], source: str) -> list[PromQLUse]:
    """panels[].targets[].expr of a Grafana dashboard, recursively through rows (both the nested
    `panels` of collapsed rows and the old `rows[].panels` layout)."""
    if isinstance(dashboard.get("dashboard"), dict):  # an API export wraps the dashboard
        dashboard = dashboard["dashboard"]
    uses: list[PromQLUse] = []

    def walk(panels: Any, prefix: tuple[Any, ...]) -> None:
        for p, panel in enumerate(as_list(panels)):
            panel = as_dict(panel)
            for t, target in enumerate(as_list(panel.get("targets"))):
                expr = as_dict(target).get("expr")
                if isinstance(expr, str) and expr.strip():
                    uses.append(PromQLUse(source, f"panel {panel.get('title')!r}",
                                          fmt_path(prefix + (p, "targets", t, "expr")), expr))
            walk(panel.get("panels"), prefix + (p, "panels"))

    walk(dashboard.get("panels"), ("panels",))
    for r, row in enumerate(as_list(dashboard.get("rows"))):
        walk(as_dict(row).get("panels"), ("rows", r, "panels"))
    return uses


def file_promql(path: str) -> tuple[list[PromQLUse], set[str], list[Finding]]:
    """PromQL uses in a dashboard (.json), a Prometheus rule file or a manifest stream (YAML),
    plus the names its recording rules define."""
    text = read_text(path)
    if path.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            return [], set(), [Finding(path, "-", "", f"invalid JSON: {e}")]
        return dashboard_promql(as_dict(data), path), set(), []
    docs, findings = parse_stream(text, path)
    uses: list[PromQLUse] = []
    for doc in docs:
        if isinstance(doc.body, dict) and "groups" in doc.body and "kind" not in doc.body:
            uses.extend(rule_groups_promql(as_list(doc.body["groups"]), doc.source, ("groups",)))
        elif isinstance(doc.body, dict):
            more, problems = manifest_promql(doc)
            uses.extend(more)
            findings.extend(problems)
    return uses, recorded_names(d.body for d in docs), findings


def load_exported(path: str) -> set[str]:
    """Metric names from a file with one name per line (blank lines and # comments ignored);
    a whole Prometheus text exposition works too. Histogram suffixes are also added stripped."""
    names: set[str] = set()
    for line in read_text(path).splitlines():
        match = re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", line)
        if match and not line.lstrip().startswith("#"):
            names.add(match.group(1))
            names.add(base_metric_name(match.group(1)))
    if not names:
        raise UsageError(f"{path} lists no metric names")
    return names


def base_metric_name(name: str) -> str:
    """A histogram series name without its _bucket/_sum/_count suffix."""
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def check_promql(uses: list[PromQLUse], exported: set[str] | None, defined: set[str]) -> list[Finding]:
    """Each expression must tokenize; with an exported list, every `pm_*` name it reads must be
    exported (after dropping a histogram suffix) or defined by a recording rule."""
    out = []
    for use in uses:
        try:
            names = promql_metric_names(use.expr)
        except PromQLError as e:
            out.append(Finding(use.source, use.obj, use.path, f"cannot read PromQL {use.expr!r}: {e}"))
            continue
        if exported is None:
            continue
        for name in names:
            if name.startswith("pm_") and not ({name, base_metric_name(name)} & (exported | defined)):
                out.append(Finding(use.source, use.obj, use.path, f"metric {name} is not exported"))
    return out


# --------------------------------------------------------------------------------------------------
# Checking a stream
# --------------------------------------------------------------------------------------------------


@dataclass
class Checker:
    """Runs every check on manifest streams; schemas and models are loaded once and shared."""

    exported: set[str] | None = None
    core: CoreSchemas = field(default_factory=CoreSchemas)
    crds: CrdModels = field(default_factory=CrdModels)

    def check_docs(self, docs: list[Doc]) -> list[Finding]:
        """All findings for one stream (one rendering, one file)."""
        out: list[Finding] = []
        valid: list[Doc] = []
        uses: list[PromQLUse] = []
        for doc in docs:
            problems = check_structure(doc)
            out.extend(problems)
            if problems:
                continue
            valid.append(doc)
            out.extend(check_schema(doc, self.core, self.crds))
            out.extend(check_pod_security(doc))
            out.extend(check_workload_selector(doc))
            more, problems = manifest_promql(doc)
            uses.extend(more)
            out.extend(problems)
        templates = pod_templates(valid)
        out.extend(check_duplicates(valid))
        out.extend(check_services(valid, templates))
        out.extend(check_pod_selectors(valid, templates))
        out.extend(check_scale_targets(valid))
        out.extend(check_monitors(valid, templates))
        out.extend(check_promql(uses, self.exported, recorded_names(d.body for d in valid)))
        return out

    def check_text(self, text: str, source: str) -> tuple[list[Doc], list[Finding]]:
        """Parses and checks a YAML stream."""
        docs, findings = parse_stream(text, source)
        return docs, findings + self.check_docs(docs)


# --------------------------------------------------------------------------------------------------
# Helm: values, rendering and lint
# --------------------------------------------------------------------------------------------------


def helm_sdk() -> Any:
    """The helm_python module with its shared library loaded."""
    helm = require("helm_python")
    try:
        helm.helm_sdk_version()
    except Exception as e:  # HelmLibraryError, OSError from ctypes
        raise ToolMissing(f"the helm-python-sdk shared library does not load: {e}") from e
    return helm


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merges override into base like repeated `helm -f`: maps merge recursively, anything else
    replaces. Returns base."""
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def load_values(paths: list[str]) -> dict[str, Any]:
    """The given values files deep-merged in order (the chart's defaults are merged by helm)."""
    merged: dict[str, Any] = {}
    for path in paths:
        try:
            docs = yaml_load_all(read_text(path))
        except yaml.YAMLError as e:
            raise UsageError(f"{path}: invalid YAML: {one_line(str(e))}") from e
        data = docs[0] if docs else None
        if data is None:
            continue
        if not isinstance(data, dict):
            raise UsageError(f"{path}: a values file must be a mapping")
        deep_merge(merged, data)
    return merged


def render_chart(chart_dir: Path, values: dict[str, Any], release: str, namespace: str,
                 label: str) -> tuple[str, dict[str, str], list[Finding]]:
    """(chart name, {template path: manifest}, findings) rendering like `helm install --dry-run`
    offline. A load or render error is a finding."""
    helm = helm_sdk()
    where = f"{chart_dir.name} [{label}]"
    try:
        with helm.Chart.load(str(chart_dir)) as chart:
            name = chart.name or chart_dir.name
            out = chart.render(values or None, name=release, namespace=namespace, is_install=True)
    except helm.HelmError as e:
        return chart_dir.name, {}, [Finding(where, "helm render", "", str(e))]
    return name, out, []


def lint_chart(chart_dir: Path, values: dict[str, Any], namespace: str, label: str) -> list[Finding]:
    """`helm lint --strict --kube-version v1.32.0` findings: every error and warning."""
    helm = helm_sdk()
    where = f"{chart_dir.name} [{label}]"
    try:
        report = helm.lint(str(chart_dir), values or None, strict=True, kube_version=LINT_KUBE_VERSION,
                           namespace=namespace)
    except helm.HelmError as e:
        return [Finding(where, "helm lint", "", str(e))]
    severity = {2: "warning", 3: "error"}
    out, reported = [], set()
    for message in report.get("messages", []):
        if message.get("severity", 0) >= 2:
            reported.add(one_line(message.get("error", "")))
            out.append(Finding(where, "helm lint", message.get("path", ""),
                               f"{severity.get(message['severity'], 'error')}: {message.get('error')}"))
    for error in report.get("errors", []):
        if one_line(error) not in reported:
            out.append(Finding(where, "helm lint", "", f"error: {error}"))
    return out


@dataclass
class Rendering:
    """The outcome of checking one chart with one set of values."""

    chart: str
    label: str
    docs: list[Doc]
    findings: list[Finding]

    def summary(self) -> str:
        """One line: chart, values, number of documents, kinds, findings."""
        kinds = collections.Counter(d.kind or "?" for d in self.docs)
        listed = ", ".join(f"{k} x{n}" if n > 1 else k for k, n in sorted(kinds.items()))
        count = len(self.findings)
        return (f"== {self.chart} [{self.label}]: {plural(len(self.docs), 'document')} ({listed or 'none'}); "
                f"{plural(count, 'finding')}")


def check_chart(checker: Checker, chart_dir: Path, values_files: list[str], release: str,
                namespace: str, label: str | None = None) -> Rendering:
    """Renders a chart with the values files, lints it, and checks the rendered manifests
    (NOTES.txt and empty documents skipped)."""
    values = load_values(values_files)
    label = label or (", ".join(values_files) if values_files else "defaults")
    name, manifests, findings = render_chart(chart_dir, values, release, namespace, label)
    name = chart_dir.name if name == chart_dir.name else f"{chart_dir.name} (chart {name})"
    findings += lint_chart(chart_dir, values, namespace, label)
    docs: list[Doc] = []
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt") or not text.strip():
            continue
        more, problems = parse_stream(text, f"{template} [{label}]")
        docs.extend(more)
        findings.extend(problems)
    findings += checker.check_docs(docs)
    return Rendering(name, label, docs, findings)


def find_charts(root: Path) -> list[Path]:
    """Chart directories (with Chart.yaml) under root, not descending into a chart (its
    subcharts are rendered with it) nor into check-fixtures."""
    found = []
    for current, dirs, files in os.walk(root):
        if "Chart.yaml" in files:
            found.append(Path(current))
            dirs.clear()
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "check-fixtures")
    return sorted(found)


# --------------------------------------------------------------------------------------------------
# same: comparing two streams
# --------------------------------------------------------------------------------------------------

_MISSING = object()


def strip_volatile_labels(node: Any) -> Any:
    """A copy with VOLATILE_LABELS removed from every `metadata.labels` (objects and pod
    templates alike); a labels map left empty is removed too."""
    if isinstance(node, list):
        return [strip_volatile_labels(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: strip_volatile_labels(v) for k, v in node.items()}
    meta = out.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("labels"), dict):
        labels = {k: v for k, v in meta["labels"].items() if k not in VOLATILE_LABELS}
        if labels:
            meta["labels"] = labels
        else:
            del meta["labels"]
    return out


def object_key(doc: Doc) -> tuple[str, str, str]:
    """(apiVersion, kind, metadata.name): how `same` pairs objects."""
    body = as_dict(doc.body)
    return str(body.get("apiVersion")), str(body.get("kind")), doc.name


def diff_values(left: Any, right: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[str, Any, Any]]:
    """(path, left, right) for every difference, depth first; _MISSING marks an absent side."""
    if isinstance(left, dict) and isinstance(right, dict):
        for key in sorted(set(left) | set(right), key=str):
            yield from diff_values(left.get(key, _MISSING), right.get(key, _MISSING), path + (key,))
    elif isinstance(left, list) and isinstance(right, list):
        for i in range(max(len(left), len(right))):
            yield from diff_values(left[i] if i < len(left) else _MISSING,
                                   right[i] if i < len(right) else _MISSING, path + (i,))
    elif left != right or type(left) is not type(right) and not (
            isinstance(left, (int, float)) and isinstance(right, (int, float))
            and not isinstance(left, bool) and not isinstance(right, bool)):
        yield fmt_path(path) or "(document)", left, right


def show_value(value: Any) -> str:
    """A short one-line rendering of a value for a diff line."""
    if value is _MISSING:
        return "(absent)"
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 100 else text[:97] + "..."


def compare_streams(left: list[Doc], right: list[Doc], per_object: int = 10) -> list[str]:
    """Lines describing how two streams differ (empty when they hold the same objects)."""
    lefts = {object_key(d): d for d in left}
    rights = {object_key(d): d for d in right}
    lines = []
    for key in sorted(set(lefts) | set(rights)):
        what = f"{key[1]}/{key[2]} ({key[0]})"
        if key not in rights:
            lines.append(f"{what}: only in the left stream ({lefts[key].source})")
        elif key not in lefts:
            lines.append(f"{what}: only in the right stream ({rights[key].source})")
        else:
            diffs = list(diff_values(strip_volatile_labels(lefts[key].body), strip_volatile_labels(rights[key].body)))
            for path, a, b in diffs[:per_object]:
                lines.append(f"{what}: {path}: {show_value(a)} vs {show_value(b)}")
            if len(diffs) > per_object:
                lines.append(f"{what}: ... and {len(diffs) - per_object} more differences")
    for name, docs, index in (("left", left, lefts), ("right", right, rights)):
        if len(index) != len(docs):
            lines.append(f"the {name} stream names some object twice")
    return lines


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def plural(count: int, noun: str) -> str:
    """'1 finding', '2 findings'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def report(findings: list[Finding]) -> int:
    """Prints findings one per line and returns the exit status."""
    for finding in findings:
        print(finding)
    print(plural(len(findings), "finding") if findings else "no findings")
    return 1 if findings else 0


def cmd_chart(args: argparse.Namespace) -> int:
    """check.py chart DIR: render + lint + check one chart."""
    preflight()
    chart_dir = Path(args.dir)
    if not (chart_dir / "Chart.yaml").is_file():
        raise UsageError(f"{chart_dir} is not a chart directory (no Chart.yaml)")
    validate_release(args.name)
    rendering = check_chart(make_checker(args), chart_dir, args.values, args.name, args.namespace)
    for finding in rendering.findings:
        print(finding)
    print(rendering.summary())
    return 1 if rendering.findings else 0


def cmd_charts(args: argparse.Namespace) -> int:
    """check.py charts ROOT: every chart with its defaults and with each ci/*-values.yaml."""
    preflight()
    charts = find_charts(Path(args.root))
    if not charts:
        raise UsageError(f"no chart (directory with Chart.yaml) under {args.root}")
    validate_release(args.name)
    checker = make_checker(args)
    total, started = 0, time.monotonic()
    for chart_dir in charts:
        variants: list[tuple[list[str], str]] = [([], "defaults")]
        variants += [([str(f)], str(f.relative_to(chart_dir))) for f in sorted(chart_dir.glob("ci/*-values.yaml"))]
        for files, label in variants:
            rendering = check_chart(checker, chart_dir, files, args.name, args.namespace, label)
            for finding in rendering.findings:
                print(finding)
            print(rendering.summary())
            total += len(rendering.findings)
    outcome = plural(total, "finding") if total else "no findings"
    print(f"{outcome} in {plural(len(charts), 'chart')} ({time.monotonic() - started:.1f} s)")
    return 1 if total else 0


def cmd_render(args: argparse.Namespace) -> int:
    """check.py render DIR: print the chart's manifests (as `helm template` would), e.g. for `same`."""
    preflight(["helm_python"])
    chart_dir = Path(args.dir)
    if not (chart_dir / "Chart.yaml").is_file():
        raise UsageError(f"{chart_dir} is not a chart directory (no Chart.yaml)")
    validate_release(args.name)
    _, out, findings = render_chart(chart_dir, load_values(args.values), args.name, args.namespace, "render")
    if findings:
        return report(findings)
    for template in sorted(out):
        text = out[template].strip()
        if template.endswith("NOTES.txt") or not text:
            continue
        print(f"---\n# Source: {template}\n{text}")
    return 0


def cmd_manifests(args: argparse.Namespace) -> int:
    """check.py manifests FILE|-: check a multi-document YAML stream."""
    preflight(m for m in REQUIRED_MODULES if m != "helm_python")
    source = "<stdin>" if args.file == "-" else args.file
    _, findings = make_checker(args).check_text(read_text(args.file), source)
    return report(findings)


def cmd_same(args: argparse.Namespace) -> int:
    """check.py same A B: the two streams hold the same objects (volatile labels ignored)."""
    streams = []
    for path in (args.a, args.b):
        docs, findings = parse_stream(read_text(path), path)
        if findings:
            return report(findings)
        streams.append(docs)
    lines = compare_streams(streams[0], streams[1])
    for line in lines:
        print(line)
    if not lines:
        print(f"same: {len(streams[0])} objects")
    return 1 if lines else 0


def cmd_promql_names(args: argparse.Namespace) -> int:
    """check.py promql-names FILE...: print the metric names used by rules/dashboards/manifests."""
    names: set[str] = set()
    findings: list[Finding] = []
    for path in args.files:
        uses, _, problems = file_promql(path)
        findings += problems
        for use in uses:
            try:
                names.update(promql_metric_names(use.expr))
            except PromQLError as e:
                findings.append(Finding(use.source, use.obj, use.path, f"cannot read PromQL: {e}"))
    for name in sorted(names):
        print(name)
    for finding in findings:
        print(finding, file=sys.stderr)
    return 1 if findings else 0


def cmd_metrics_used(args: argparse.Namespace) -> int:
    """check.py metrics-used --exported-metrics F FILE...: every pm_* name used is exported."""
    if not args.exported_metrics:
        raise UsageError("metrics-used needs --exported-metrics FILE")
    exported = load_exported(args.exported_metrics)
    uses, defined, findings = [], set(), []
    for path in args.files:
        more, recorded, problems = file_promql(path)
        uses += more
        defined |= recorded
        findings += problems
    findings += check_promql(uses, exported, defined)
    if not findings:
        print(f"{len(uses)} expressions read only exported metrics")
    return report(findings)


def cmd_selftest(args: argparse.Namespace) -> int:
    """check.py selftest: run the unit tests in this file."""
    preflight()
    suite = unittest.TestLoader().loadTestsFromModule(sys.modules[__name__])
    if args.pattern:
        suite = unittest.TestSuite(t for t in iter_tests(suite) if any(p in t.id() for p in args.pattern))
    result = unittest.TextTestRunner(verbosity=2 if args.verbose else 1).run(suite)
    return 0 if result.wasSuccessful() else 1


def iter_tests(suite: unittest.TestSuite) -> Iterator[unittest.TestCase]:
    """Flattens a test suite."""
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from iter_tests(item)
        else:
            yield item


def make_checker(args: argparse.Namespace) -> Checker:
    """A Checker with the exported metrics of --exported-metrics (if given)."""
    exported = load_exported(args.exported_metrics) if args.exported_metrics else None
    return Checker(exported=exported)


def validate_release(name: str) -> None:
    """A release name helm accepts, else a usage error."""
    helm = helm_sdk()
    try:
        helm.validate_release_name(name)
    except helm.HelmError as e:
        raise UsageError(f"invalid release name {name!r}: {e}") from e


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser; --exported-metrics is accepted before or after the subcommand."""
    parser = argparse.ArgumentParser(prog="check.py", description=__doc__.split("\n\n")[0],
                                     epilog="exit status: 0 all good, 1 findings, 2 usage error or missing tool",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exported-metrics", metavar="FILE", default=None,
                        help="metric names the binaries export (one per line); pm_* names in PromQL must be in it")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--exported-metrics", metavar="FILE", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    release = argparse.ArgumentParser(add_help=False)
    release.add_argument("--name", default=DEFAULT_RELEASE, help=f"release name (default {DEFAULT_RELEASE})")
    release.add_argument("--namespace", default=DEFAULT_NAMESPACE, help=f"namespace (default {DEFAULT_NAMESPACE})")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("chart", parents=[common, release], help="render, lint and check one chart")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--values", "-f", metavar="FILE", action="extend", nargs="+", default=[],
                   help="values files, deep-merged in order over the chart's defaults")
    p.set_defaults(run=cmd_chart)

    p = sub.add_parser("charts", parents=[common, release],
                       help="every chart under ROOT, with defaults and each ci/*-values.yaml")
    p.add_argument("root", metavar="ROOT")
    p.set_defaults(run=cmd_charts)

    p = sub.add_parser("render", parents=[common, release], help="print a chart's manifests (helm template)")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--values", "-f", metavar="FILE", action="extend", nargs="+", default=[],
                   help="values files, deep-merged in order over the chart's defaults")
    p.set_defaults(run=cmd_render)

    p = sub.add_parser("manifests", parents=[common], help="check a multi-document YAML stream")
    p.add_argument("file", metavar="FILE|-")
    p.set_defaults(run=cmd_manifests)

    p = sub.add_parser("same", parents=[common], help="two YAML streams hold the same objects")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.set_defaults(run=cmd_same)

    p = sub.add_parser("promql-names", parents=[common],
                       help="metric names used by rule files, dashboards (.json) or manifests")
    p.add_argument("files", metavar="FILE", nargs="+")
    p.set_defaults(run=cmd_promql_names)

    p = sub.add_parser("metrics-used", parents=[common],
                       help="every pm_* metric used by rule files/dashboards/manifests is exported")
    p.add_argument("files", metavar="FILE", nargs="+")
    p.set_defaults(run=cmd_metrics_used)

    p = sub.add_parser("selftest", parents=[common], help="run the unit tests")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("pattern", nargs="*", help="only tests whose id contains one of these")
    p.set_defaults(run=cmd_selftest)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 all good, 1 findings, 2 usage error or missing tool."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if yaml is None:
            raise ToolMissing(f"Python module yaml (PyYAML) is not available; {REQUIREMENTS_HINT}")
        return args.run(args)
    except UsageError as e:
        print(f"check.py: {e}", file=sys.stderr)
        return 2


# --------------------------------------------------------------------------------------------------
# Self-tests (check.py selftest)
# --------------------------------------------------------------------------------------------------

GOOD_STREAM = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web, helm.sh/chart: web-0.1.0}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, app.kubernetes.io/managed-by: Helm}}
    spec:
      automountServiceAccountToken: false
      securityContext: {runAsNonRoot: true, runAsUser: 10001, seccompProfile: {type: RuntimeDefault}}
      containers:
        - name: web
          image: ghcr.io/example/web:1.2.3
          ports: [{name: http, containerPort: 8080}]
          readinessProbe: {httpGet: {path: /readyz, port: http}}
          livenessProbe: {httpGet: {path: /healthz, port: http}}
          resources:
            requests: {cpu: 100m, memory: 64Mi}
            limits: {cpu: "1", memory: 128Mi}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
---
apiVersion: v1
kind: Service
metadata: {name: web, labels: {app: web}}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress: [{ports: [{port: http}]}]
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  endpoints: [{port: http, interval: 30s}]
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: web}
spec:
  scaleTargetRef: {name: web}
  minReplicaCount: 1
  maxReplicaCount: 5
  triggers:
    - type: prometheus
      metadata:
        serverAddress: http://prometheus:9090
        query: sum(pm_queue_depth{queue="work"})
        threshold: "10"
"""


def _stream_with(mutate: Callable[[list[Any]], object]) -> str:
    """GOOD_STREAM with one change applied to its parsed documents, dumped back to YAML."""
    docs = [d for d in yaml.safe_load_all(GOOD_STREAM) if d]
    mutate(docs)
    return yaml.safe_dump_all(docs, sort_keys=False)


class _CheckerTest(unittest.TestCase):
    """Shares one Checker (schemas loaded once) across the stream tests."""

    checker: Checker | None = None

    @classmethod
    def shared(cls, exported: set[str] | None = None) -> Checker:
        if _CheckerTest.checker is None:
            _CheckerTest.checker = Checker()
        _CheckerTest.checker.exported = exported
        return _CheckerTest.checker

    def findings(self, text: str, exported: set[str] | None = None) -> list[str]:
        _, found = self.shared(exported).check_text(text, "test.yaml")
        return [str(f) for f in found]

    def assertFlagged(self, text: str, *needles: str, exported: set[str] | None = None) -> None:
        found = self.findings(text, exported)
        for needle in needles:
            self.assertTrue(any(needle in f for f in found), f"no finding contains {needle!r}: {found}")


class StreamChecks(_CheckerTest):
    def test_good_stream_passes(self) -> None:
        self.assertEqual(self.findings(GOOD_STREAM, exported={"pm_queue_depth"}), [])

    def test_missing_read_only_root_filesystem(self) -> None:
        def drop(docs: list[Any]) -> None:
            del docs[0]["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"]
        self.assertFlagged(_stream_with(drop),
                           "Deployment/web: spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem:"
                           " must be true")

    def test_scaledobject_unknown_field(self) -> None:
        self.assertFlagged(_stream_with(lambda d: d[4]["spec"].update(maxReplicaCountt=5)),
                           "ScaledObject/web: spec.maxReplicaCountt: Extra inputs are not permitted")

    def test_servicemonitor_wrong_type(self) -> None:
        self.assertFlagged(_stream_with(lambda d: d[3]["spec"].update(endpoints="http")),
                           "ServiceMonitor/web: spec.endpoints:")

    def test_unknown_kind(self) -> None:
        self.assertFlagged(GOOD_STREAM + "---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
                           "Widget/w: kind: no schema for Widget")

    def test_core_unknown_field(self) -> None:
        self.assertFlagged(_stream_with(lambda d: d[1]["spec"].update(selectr={"app": "web"})),
                           "Service/web: spec: Additional properties are not allowed ('selectr' was unexpected)")

    def test_promql_name_not_exported(self) -> None:
        self.assertFlagged(GOOD_STREAM, "ScaledObject/web: spec.triggers[0].metadata.query: metric pm_queue_depth"
                           " is not exported", exported={"pm_other"})

    def test_histogram_suffix_stripped(self) -> None:
        def query(docs: list[Any]) -> None:
            docs[4]["spec"]["triggers"][0]["metadata"]["query"] = "histogram_quantile(0.9, sum by (le) " \
                                                                  "(rate(pm_lat_seconds_bucket[1m])))"
        self.assertEqual(self.findings(_stream_with(query), exported={"pm_lat_seconds"}), [])

    def test_pod_and_container_security(self) -> None:
        def weaken(docs: list[Any]) -> None:
            spec = docs[0]["spec"]["template"]["spec"]
            spec["hostNetwork"] = True
            spec["automountServiceAccountToken"] = True
            spec["volumes"] = [{"name": "h", "hostPath": {"path": "/"}}]
            c = spec["containers"][0]
            c["image"] = "nginx"
            c["securityContext"]["capabilities"] = {"drop": ["NET_RAW"]}
            c["securityContext"]["privileged"] = True
            del c["resources"]["limits"]["memory"]
            del c["livenessProbe"]
            spec["initContainers"] = [dict(c, name="init", image="busybox:latest")]
        self.assertFlagged(_stream_with(weaken), "hostNetwork: must not be true", "automountServiceAccountToken:",
                           "volumes[0].hostPath:", "containers[0].image: image 'nginx' is untagged",
                           "capabilities.drop: must contain ALL", "privileged: must not be true",
                           "containers[0].resources.limits.memory: must be set", "livenessProbe: missing")
        found = self.findings(_stream_with(weaken))
        self.assertFalse(any("initContainers[0].image" in f for f in found), "init image pinned only if sidecar")

    def test_probe_names_unknown_port(self) -> None:
        def rename(docs: list[Any]) -> None:
            docs[0]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = "metrics"
        self.assertFlagged(_stream_with(rename), "readinessProbe.httpGet.port: names port 'metrics'")

    def test_selectors_must_match(self) -> None:
        def retarget(docs: list[Any]) -> None:
            docs[1]["spec"]["selector"] = {"app": "other"}
            docs[2]["spec"]["podSelector"] = {"matchLabels": {"app": "other"}}
            docs[3]["spec"]["selector"] = {"matchLabels": {"app": "other"}}
        self.assertFlagged(_stream_with(retarget), "Service/web: spec.selector:",
                           "NetworkPolicy/web: spec.podSelector:", "ServiceMonitor/web: spec.selector")

    def test_requests_above_limits_and_bad_quantity(self) -> None:
        def over(docs: list[Any]) -> None:
            docs[0]["spec"]["template"]["spec"]["containers"][0]["resources"] = {
                "requests": {"cpu": "2", "memory": "64MB"}, "limits": {"cpu": "1", "memory": "128Mi"}}
        self.assertFlagged(_stream_with(over), "requests.cpu: 2 is above the limit 1",
                           "requests.memory: '64MB' is not a valid quantity")

    def test_duplicate_yaml_key(self) -> None:
        self.assertFlagged("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: a, k: b}\n",
                           "duplicate key 'k'")

    def test_same_schema_selection_as_kubernetes_validate(self) -> None:
        kv = require("kubernetes_validate")
        docs = [d for d in yaml.safe_load_all(GOOD_STREAM) if d][:3]
        bad = _stream_with(lambda d: d[0]["spec"].update(replicas="two"))
        for doc in docs + [yaml.safe_load_all(bad).__next__()]:
            ours = self.shared().core.errors(doc)
            try:
                kv.validate(doc, KUBE_VERSION, strict=True)
                theirs = True
            except kv.ValidationError:
                theirs = False
            self.assertEqual(ours == [], theirs, doc["kind"])


class PromQLTokenizer(unittest.TestCase):
    def names(self, expr: str) -> list[str]:
        return promql_metric_names(expr)

    def test_histogram_quantile(self) -> None:
        self.assertEqual(self.names("histogram_quantile(0.99, sum by (le) (rate(pm_e2e_seconds_bucket[5m]))) > 0.05"),
                         ["pm_e2e_seconds_bucket"])

    def test_labels_grouping_and_subqueries(self) -> None:
        expr = ('sum(rate(pm_a_total{queue=~"x.*", le!="1"}[5m:30s] offset 1h)) by (queue) '
                '/ on(queue) group_left(role) pm_b * ignoring(instance) pm_c')
        self.assertEqual(self.names(expr), ["pm_a_total", "pm_b", "pm_c"])

    def test_name_matcher_and_quoted_name(self) -> None:
        self.assertEqual(self.names('{__name__="pm_c", job="x"} + {"pm_d", a="b"}'), ["pm_c", "pm_d"])

    def test_keywords_functions_numbers_strings(self) -> None:
        expr = ('up == 0 or absent(pm_d) unless count_values("le", pm_e) and bool 1e-9 '
                '+ label_replace(pm_f, "dst", "$1", "src", "(.*)") > Inf - 0x1F')
        self.assertEqual(self.names(expr), ["up", "pm_d", "pm_e", "pm_f"])

    def test_grafana_variables_and_comments(self) -> None:
        expr = 'sum without (pod) (rate(pm_g{queue="$queue"}[$__rate_interval])) # by (x) pm_nope\n + pm_h @ end()'
        self.assertEqual(self.names(expr), ["pm_g", "pm_h"])

    def test_recording_rule_names(self) -> None:
        self.assertEqual(self.names("job:pm_x:rate5m / sum(rate(pm_y[1h]))"), ["job:pm_x:rate5m", "pm_y"])

    def test_errors(self) -> None:
        for expr in ('sum(pm_x', 'pm_x{a="b"', 'pm_x{a="b}', 'pm_x)', 'rate(pm_x[5m)', 'rat(pm_x[5m])'):
            with self.assertRaises(PromQLError, msg=expr):
                self.names(expr)


class RuleAndDashboardFiles(unittest.TestCase):
    def test_rules_dashboard_and_exported(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            rules = Path(tmp, "alerts.yml")
            rules.write_text(textwrap.dedent("""\
                groups:
                  - name: g
                    rules:
                      - record: pm_rate:sum
                        expr: sum(rate(pm_a_total[5m]))
                      - alert: A
                        expr: pm_rate:sum > 1 and pm_b_seconds_count > 0
                """))
            dash = Path(tmp, "dashboard.json")
            dash.write_text(json.dumps({"panels": [
                {"title": "t", "targets": [{"expr": "sum(pm_c)"}]},
                {"type": "row", "panels": [{"title": "inner", "targets": [{"expr": "pm_missing + up"}]}]}]}))
            exported = Path(tmp, "exported.txt")
            exported.write_text("pm_a_total\npm_b_seconds_bucket\n# comment\npm_c\n")
            names: set[str] = set()
            for path in (rules, dash):
                for use in file_promql(str(path))[0]:
                    names.update(promql_metric_names(use.expr))
            self.assertEqual(names, {"pm_a_total", "pm_rate:sum", "pm_b_seconds_count", "pm_c", "pm_missing", "up"})
            uses, defined, _ = file_promql(str(rules))
            more, _, _ = file_promql(str(dash))
            found = [str(f) for f in check_promql(uses + more, load_exported(str(exported)), defined)]
            self.assertEqual(len(found), 1, found)
            self.assertIn("panel 'inner': panels[1].panels[0].targets[0].expr: metric pm_missing is not exported",
                          found[0])


class SameStreams(unittest.TestCase):
    def test_volatile_labels_and_key_order_ignored(self) -> None:
        left, _ = parse_stream(GOOD_STREAM, "a")
        right, _ = parse_stream(_stream_with(lambda d: d.reverse()), "b")
        for doc in right:
            doc.body = dict(reversed(list(strip_volatile_labels(doc.body).items())))
        self.assertEqual(compare_streams(left, right), [])

    def test_differences_reported(self) -> None:
        left, _ = parse_stream(GOOD_STREAM, "a")
        right, _ = parse_stream(_stream_with(lambda d: (d[0]["spec"].update(replicas=3), d.pop(2))), "b")
        lines = compare_streams(left, right)
        self.assertIn("Deployment/web (apps/v1): spec.replicas: 2 vs 3", lines)
        self.assertTrue(any("NetworkPolicy/web" in line and "only in the left" in line for line in lines), lines)


class ValuesFiles(unittest.TestCase):
    def test_values_files_deep_merge_in_order(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            first, second = Path(tmp, "a.yaml"), Path(tmp, "b.yaml")
            first.write_text("image: {repository: r, tag: '1'}\nlist: [1, 2]\n")
            second.write_text("image: {tag: '2'}\nlist: [3]\n")
            self.assertEqual(load_values([str(first), str(second)]),
                             {"image": {"repository": "r", "tag": "2"}, "list": [3]})


class HelmCharts(_CheckerTest):
    def write_chart(self, root: Path, good: bool) -> Path:
        chart = root / "demo"
        (chart / "templates").mkdir(parents=True)
        (chart / "ci").mkdir()
        (chart / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.0\nappVersion: '1.0'\n"
                                          "icon: https://example.com/icon.png\n")
        (chart / "values.yaml").write_text("replicas: 2\nreadOnly: true\n")
        (chart / "ci" / "ro-values.yaml").write_text(f"readOnly: {'true' if good else 'false'}\n")
        docs = [d for d in yaml.safe_load_all(GOOD_STREAM) if d][:3]
        docs[0]["spec"]["replicas"] = "REPLICAS"
        docs[0]["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = "RO"
        text = yaml.safe_dump_all(docs, sort_keys=False).replace("REPLICAS", "{{ .Values.replicas }}")
        (chart / "templates" / "all.yaml").write_text(text.replace("RO", "{{ .Values.readOnly }}"))
        (chart / "templates" / "NOTES.txt").write_text("hello\n")
        return chart

    def test_render_lint_and_check(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            chart = self.write_chart(Path(tmp), good=False)
            self.assertEqual(find_charts(Path(tmp)), [chart])
            ok = check_chart(self.shared(), chart, [], "pm", "default")
            self.assertEqual([str(f) for f in ok.findings], [])
            self.assertEqual(len(ok.docs), 3)
            bad = check_chart(self.shared(), chart, [str(chart / "ci" / "ro-values.yaml")], "pm", "default")
            self.assertTrue(any("readOnlyRootFilesystem: must be true" in str(f) for f in bad.findings),
                            [str(f) for f in bad.findings])
            self.assertIn("demo/templates/all.yaml", str(bad.findings[0]))

    def test_lint_warning_is_a_finding(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            chart = self.write_chart(Path(tmp), good=True)
            (chart / "templates" / "old.yaml").write_text(
                "apiVersion: flowcontrol.apiserver.k8s.io/v1beta3\nkind: FlowSchema\nmetadata: {name: old}\n"
                "spec: {priorityLevelConfiguration: {name: global-default}}\n")
            found = [str(f) for f in check_chart(self.shared(), chart, [], "pm", "default").findings]
            self.assertTrue(any("helm lint" in f and "deprecated" in f for f in found), found)


class CommandLine(unittest.TestCase):
    def test_exit_codes(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            good, bad = Path(tmp, "good.yaml"), Path(tmp, "bad.yaml")
            good.write_text(GOOD_STREAM)
            bad.write_text(GOOD_STREAM + "---\napiVersion: v1\nkind: Nope\nmetadata: {name: n}\n")
            exported = Path(tmp, "exported.txt")
            exported.write_text("pm_queue_depth\n")
            with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet), \
                    contextlib.redirect_stderr(quiet):
                self.assertEqual(main(["manifests", str(good), "--exported-metrics", str(exported)]), 0)
                self.assertEqual(main(["--exported-metrics", str(exported), "manifests", str(bad)]), 1)
                self.assertEqual(main(["manifests", str(Path(tmp, "absent.yaml"))]), 2)
                self.assertEqual(main(["same", str(good), str(good)]), 0)
                self.assertEqual(main(["same", str(good), str(bad)]), 1)
                self.assertEqual(main(["metrics-used", str(good)]), 2)
                self.assertEqual(main(["charts", tmp]), 2)


if __name__ == "__main__":
    sys.exit(main())
