#!/usr/bin/env python3
"""Renders a kustomization the way `kustomize build` (or `kubectl kustomize`) does, for the
subset of kustomize that infra/k8s uses, so that the manifests can be checked on a machine
without kustomize. Needs PyYAML only.

    python3 infra/k8s/render.py infra/k8s/overlays/cpu > cpu.yaml

Supported, with kustomize's semantics:
- `resources`: YAML files (several documents each) and folders holding a kustomization.yaml
  (a base, rendered first, recursively);
- `patches`: a strategic-merge patch (a file or inline), applied to the object it names, or to
  every object its `target` selects (kind, name as a regular expression, labelSelector with
  `key=value` terms, namespace, group, version);
- `namespace`: set on every namespaced object;
- `images`: `name` matched against the image without its tag or digest, then `newName`,
  `newTag`, `digest`;
in kustomize's order: the resources (bases first), then patches, namespace, images.

Anything else in a kustomization (generators, labels, namePrefix, replacements, JSON 6902
patches, ...) is refused with an error, and so is a strategic-merge patch that would need a
list-merge rule this file does not know: a rendering that silently differed from kustomize's
would make the checks meaningless. infra/k8s/validate.py compares this rendering with
`kubectl kustomize` wherever kubectl is installed.
"""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_KEYS = {"apiVersion", "kind", "resources", "patches", "namespace", "images"}

# Kinds whose objects have no namespace (the namespace transformer leaves them alone).
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
    "RuntimeClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "APIService",
    "ClusterTriggerAuthentication",
}

# Strategic merge: the built-in kinds' lists that merge element by element, keyed by a field
# (their `patchMergeKey` in the Kubernetes API); lists not named here are replaced whole, as
# Kubernetes does for lists without a patch strategy. The key of `ports` depends on where it is.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "topologySpreadConstraints": "topologyKey",
    "hostAliases": "ip",
}
REPLACED_LISTS = {
    "args",
    "command",
    "envFrom",
    "tolerations",
    "policyTypes",
    "ingress",
    "egress",
    "from",
    "to",
    "matchExpressions",
    "values",
    "nodeSelectorTerms",
}
BUILTIN_GROUPS = {"", "apps", "batch", "policy", "networking.k8s.io", "autoscaling"}

# Where the image transformer looks for containers (kustomize's fieldSpecs for `images`).
POD_SPEC_PATHS = (
    ("spec",),
    ("spec", "template", "spec"),
    ("spec", "jobTemplate", "spec", "template", "spec"),
)


class RenderError(Exception):
    pass


def load_documents(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
            raise RenderError(f"{path}: every document must be a Kubernetes object")
    return docs


def kustomization_file(folder: Path) -> Path:
    for name in KUSTOMIZATION_FILES:
        if (folder / name).is_file():
            return folder / name
    raise RenderError(f"{folder}: no kustomization.yaml")


def render(folder: Path | str) -> list[dict[str, Any]]:
    """The objects that `kustomize build FOLDER` prints (in their order of appearance)."""
    folder = Path(folder).resolve()
    kfile = kustomization_file(folder)
    with kfile.open(encoding="utf-8") as f:
        k = yaml.safe_load(f) or {}
    unknown = set(k) - SUPPORTED_KEYS
    if unknown:
        raise RenderError(
            f"{kfile}: {', '.join(sorted(unknown))} not supported by infra/k8s/render.py"
        )
    objects: list[dict[str, Any]] = []
    for entry in k.get("resources", []):
        path = (folder / entry).resolve()
        if path.is_dir():
            objects.extend(render(path))
        elif path.is_file():
            objects.extend(load_documents(path))
        else:
            raise RenderError(f"{kfile}: resource {entry} not found")
    seen = set()
    for obj in objects:
        key = object_key(obj)
        if key in seen:
            raise RenderError(f"{kfile}: {key} appears twice")
        seen.add(key)
    for patch in k.get("patches", []):
        apply_patch(objects, patch, folder, kfile)
    if "namespace" in k:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = k["namespace"]
    for image in k.get("images", []):
        apply_image(objects, image, kfile)
    return objects


def object_key(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    meta = obj.get("metadata", {})
    return (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta.get("name", ""))


def group_version(api_version: str) -> tuple[str, str]:
    if "/" in api_version:
        group, version = api_version.split("/", 1)
        return group, version
    return "", api_version


# --- patches -----------------------------------------------------------------------------------


def apply_patch(objects: list[dict], entry: dict, folder: Path, kfile: Path) -> None:
    unknown = set(entry) - {"path", "patch", "target"}
    if unknown:
        raise RenderError(f"{kfile}: patch fields {sorted(unknown)} not supported")
    if "path" in entry:
        docs = load_documents((folder / entry["path"]).resolve())
    elif "patch" in entry:
        docs = [d for d in yaml.safe_load_all(entry["patch"]) if d is not None]
    else:
        raise RenderError(f"{kfile}: a patch needs `path` or `patch`")
    if len(docs) != 1 or not isinstance(docs[0], dict) or "kind" not in docs[0]:
        raise RenderError(
            f"{kfile}: only strategic-merge patches (one object each) are supported"
        )
    patch = docs[0]
    target = entry.get("target")
    if target is None:
        meta = patch.get("metadata", {})
        target = {"kind": patch["kind"], "name": re.escape(meta.get("name", ""))}
        if "namespace" in meta:
            target["namespace"] = meta["namespace"]
    matched = [i for i, obj in enumerate(objects) if selects(target, obj, kfile)]
    if not matched:
        raise RenderError(f"{kfile}: patch target {target} matches no object")
    body = {key: value for key, value in patch.items() if key not in ("apiVersion", "kind")}
    # The patch's own name and namespace only say which object it is for: never merged.
    meta = body.get("metadata")
    if isinstance(meta, dict):
        meta = {k: v for k, v in meta.items() if k not in ("name", "namespace")}
        if meta:
            body["metadata"] = meta
        else:
            del body["metadata"]
    for i in matched:
        obj = objects[i]
        builtin = group_version(obj["apiVersion"])[0] in BUILTIN_GROUPS
        objects[i] = merge(obj, body, builtin, (obj["kind"],))


def selects(target: dict, obj: dict, kfile: Path) -> bool:
    unknown = set(target) - {"kind", "name", "namespace", "labelSelector", "group", "version"}
    if unknown:
        raise RenderError(f"{kfile}: patch target fields {sorted(unknown)} not supported")
    meta = obj.get("metadata", {})
    group, version = group_version(obj["apiVersion"])
    if "kind" in target and target["kind"] != obj["kind"]:
        return False
    if "group" in target and target["group"] != group:
        return False
    if "version" in target and target["version"] != version:
        return False
    if "namespace" in target and target["namespace"] != meta.get("namespace", ""):
        return False
    if "name" in target and not re.fullmatch(target["name"], meta.get("name", "")):
        return False
    if "labelSelector" in target:
        labels = meta.get("labels", {}) or {}
        for term in str(target["labelSelector"]).split(","):
            term = term.strip()
            if not re.fullmatch(r"[A-Za-z0-9._/-]+=[A-Za-z0-9._-]*", term):
                raise RenderError(
                    f"{kfile}: labelSelector term {term!r}: only key=value is supported"
                )
            key, value = term.split("=", 1)
            if labels.get(key) != value:
                return False
    return True


def merge(base: Any, patch: Any, builtin: bool, path: tuple[str, ...]) -> Any:
    """Strategic merge (built-in kinds) or JSON merge patch (custom resources) of `patch`
    into a copy of `base`."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(base, dict):
        base = {}
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(key, str) and key.startswith("$"):
            raise RenderError(f"{'.'.join(path)}: patch directive {key} not supported")
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            out[key] = merge(out.get(key), value, builtin, path + (key,))
        elif isinstance(value, list):
            out[key] = merge_list(out.get(key), value, builtin, path + (key,))
        else:
            out[key] = value
    return out


def merge_list(base: Any, patch: list, builtin: bool, path: tuple[str, ...]) -> list:
    field = path[-1]
    if not builtin:
        if any(isinstance(item, (dict, list)) for item in patch):
            raise RenderError(
                f"{'.'.join(path)}: a list of objects in a patch of a custom resource "
                "(kustomize's merge of those is not reproduced here)"
            )
        return copy.deepcopy(patch)
    key = MERGE_KEYS.get(field)
    if field == "ports":
        key = "port" if path[:1] == ("Service",) else "containerPort"
    if key is None:
        if field in REPLACED_LISTS or not any(isinstance(i, dict) for i in patch):
            return copy.deepcopy(patch)
        raise RenderError(
            f"{'.'.join(path)}: no list-merge rule for {field!r} in infra/k8s/render.py"
        )
    # kustomize's order: the patch's elements first, in the patch's order (merged into the
    # element with the same key, if any), then the other elements, in their order.
    base = base if isinstance(base, list) else []
    out = []
    patched_keys = set()
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise RenderError(f"{'.'.join(path)}: every element needs its merge key {key!r}")
        existing = next(
            (e for e in base if isinstance(e, dict) and e.get(key) == item[key]), None
        )
        out.append(merge(existing, item, builtin, path) if existing else copy.deepcopy(item))
        patched_keys.add(item[key])
    out.extend(
        copy.deepcopy(e)
        for e in base
        if not (isinstance(e, dict) and e.get(key) in patched_keys)
    )
    return out


# --- images ------------------------------------------------------------------------------------


def split_image(image: str) -> tuple[str, str, str]:
    """(name, tag, digest) of an image reference; a registry's port is part of the name."""
    name, _, digest = image.partition("@")
    tag = ""
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    return name, tag, digest


def apply_image(objects: list[dict], entry: dict, kfile: Path) -> None:
    unknown = set(entry) - {"name", "newName", "newTag", "digest"}
    if unknown or "name" not in entry:
        raise RenderError(f"{kfile}: images entry {entry} not supported")
    for obj in objects:
        for spec_path in POD_SPEC_PATHS:
            spec: Any = obj
            for part in spec_path:
                spec = spec.get(part) if isinstance(spec, dict) else None
            if not isinstance(spec, dict):
                continue
            for field in ("initContainers", "containers"):
                for container in spec.get(field, []) or []:
                    name, tag, digest = split_image(container.get("image", ""))
                    if name != entry["name"]:
                        continue
                    name = entry.get("newName", name)
                    if "digest" in entry:
                        container["image"] = f"{name}@{entry['digest']}"
                    elif "newTag" in entry:
                        container["image"] = f"{name}:{entry['newTag']}"
                    else:
                        suffix = f"@{digest}" if digest else (f":{tag}" if tag else "")
                        container["image"] = name + suffix


def dump(objects: list[dict]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    try:
        sys.stdout.write(dump(render(argv[1])))
    except RenderError as e:
        print(f"render.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
