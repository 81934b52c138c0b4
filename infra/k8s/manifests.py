"""What validate.py's checks share: the manifests' pod templates and environment, MedInform's
settings, models and queue names (read from the program's own files), and the example Secrets."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Iterator

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
EXAMPLE_SECRETS = HERE / "examples" / "secrets.example.yaml"
RABBITMQ_RS = ROOT / "core" / "src" / "queue" / "rabbitmq.rs"
# MEDINFORM_* variables that are not settings but that `medinform` itself reads (the command
# line's --config and --log-format, and the log filter): core/src/config/load.rs,
# is_process_variable. The others it accepts there are for scripts and tests, not for a pod.
PROCESS_VARIABLES = {"MEDINFORM_CONFIG", "MEDINFORM_LOG", "MEDINFORM_LOG_FORMAT"}
POD_OWNERS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


# --- helpers -----------------------------------------------------------------------------------


def ident(obj: dict) -> str:
    return f"{obj['kind']}/{obj.get('metadata', {}).get('name', '?')}"


def pod_templates(objects: list[dict]) -> Iterator[tuple[dict, dict, dict]]:
    """(owner, pod metadata, pod spec) of every pod template."""
    for obj in objects:
        kind = obj["kind"]
        if kind in POD_OWNERS:
            template = obj.get("spec", {}).get("template", {})
        elif kind == "CronJob":
            template = obj.get("spec", {}).get("jobTemplate", {}).get("spec", {}).get("template", {})
        elif kind == "Pod":
            template = obj
        else:
            continue
        yield obj, template.get("metadata", {}) or {}, template.get("spec", {}) or {}


def containers(spec: dict) -> list[dict]:
    return list(spec.get("initContainers", []) or []) + list(spec.get("containers", []) or [])


def config_maps(objects: list[dict]) -> dict[str, dict[str, str]]:
    return {
        o["metadata"]["name"]: o.get("data", {}) or {}
        for o in objects
        if o["kind"] == "ConfigMap"
    }


def effective_env(container: dict, cms: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Name -> literal value (str), or None where it comes from a reference."""
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []) or []:
        ref = source.get("configMapRef")
        if ref and ref.get("name") in cms:
            prefix = source.get("prefix", "")
            for k, v in cms[ref["name"]].items():
                env[prefix + k] = v
    for var in container.get("env", []) or []:
        env[var["name"]] = var.get("value") if "valueFrom" not in var else None
    return env


def selector_matches(selector: dict, labels: dict) -> bool:
    if not selector:
        return True
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def strict(schema: Any) -> Any:
    """The schema with `additionalProperties: false` wherever an object lists its properties
    and says nothing of others (what the API server's strict field validation refuses)."""
    if isinstance(schema, dict):
        for value in schema.values():
            strict(value)
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        for item in schema:
            strict(item)
    return schema


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


# --- what the program accepts ------------------------------------------------------------------


class Program:
    """MedInform's settings (from medinform.example.toml), models and queue names."""

    def __init__(self, settings_file: Path) -> None:
        with settings_file.open("rb") as f:
            self.example = tomllib.load(f)
        self.settings_file = settings_file
        # Variable name -> the example's value (its type is the setting's).
        self.settings: dict[str, Any] = {}
        # Prefixes of map sections (models.thresholds: any model id is a key).
        self.maps: list[str] = []
        self._flatten(self.example, "MEDINFORM")
        self.models = sorted(
            load_toml(p)["id"] for p in (ROOT / "models").glob("*/manifest.toml")
        )
        self.lane_templates = lane_templates()

    def _flatten(self, table: dict, prefix: str) -> None:
        for key, value in table.items():
            name = f"{prefix}_{key.upper()}"
            if isinstance(value, dict):
                if value:
                    self._flatten(value, name)
                else:
                    self.maps.append(name + "_")
            else:
                self.settings[name] = value

    def check(self, name: str, value: Any) -> str | None:
        """Why `name=value` would be refused, or None."""
        if name in PROCESS_VARIABLES:
            return None
        for prefix in self.maps:
            if name.startswith(prefix):
                key = name[len(prefix):].lower()
                if key not in self.models:
                    return f"{name}: {key} is not a model id of models/"
                return None
        if name not in self.settings:
            return f"{name} is not a setting of {self.settings_file.name}"
        if value is None:
            return None
        expected = self.settings[name]
        if isinstance(expected, bool):
            if value not in ("true", "false"):
                return f"{name}={value!r}: expected true or false"
        elif isinstance(expected, int):
            if not re.fullmatch(r"-?\d+", str(value)):
                return f"{name}={value!r}: expected an integer"
        elif isinstance(expected, float):
            try:
                float(value)
            except ValueError:
                return f"{name}={value!r}: expected a number"
        return None

    def default(self, name: str) -> Any:
        return self.settings.get(name)


def load_toml(path: Path) -> dict:
    with path.open("rb") as f:
        return tomllib.load(f)


def lane_templates() -> tuple[str, ...]:
    """How core/src/queue/rabbitmq.rs names a model's queues (its interactive and bulk lanes),
    as ("{prefix}.jobs.{model}", "{prefix}.bulk.{model}"); empty when fn lane reads otherwise."""
    text = RABBITMQ_RS.read_text(encoding="utf-8")
    body = re.search(r"fn lane\(&self, model: &str, priority: Priority\) -> String \{(.*?)\n    \}", text, re.S)
    if not body:
        return ()
    arms = re.findall(
        r'Priority::(Interactive|Bulk) => format!\("\{\}([^"]*)", self\.prefix\)', body.group(1)
    )
    return tuple("{prefix}" + template for _, template in sorted(arms, key=lambda a: a[0] != "Interactive"))



def example_secrets() -> tuple[dict[str, set[str]], list[dict]]:
    """Secret name -> its keys, and the documents, of examples/secrets.example.yaml."""
    docs = [d for d in yaml.safe_load_all(EXAMPLE_SECRETS.read_text(encoding="utf-8")) if d]
    secrets = {
        d["metadata"]["name"]: set((d.get("stringData") or {}) | (d.get("data") or {}))
        for d in docs
        if d.get("kind") == "Secret"
    }
    return secrets, docs
