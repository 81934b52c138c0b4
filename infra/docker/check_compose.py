"""Checks the docker compose files offline, without a Docker daemon or Compose v2.

- docker-compose.yml: Docker Compose 1.29 (Debian's `docker-compose`) interpolates it (every
  `${VAR:-default}`), resolves the anchors and checks it against its schema (`config`); it
  predates the top-level `name`, so it reads a copy without it. Its output, `name` restored, is
  then parsed by `compose-spec` (PyPI), a strict parser of the Compose Specification that Compose
  v2 implements: an unknown key, a wrong type or an invalid port or restart policy fails.
- infra/docker/compose.cpu.yml (the override for hosts without a GPU): parsed by `compose-spec`
  alone, its `!reset` tag read as an empty value; it must name only services of the main file.

    .venv/bin/python infra/docker/check_compose.py

Exits 1 with the reason when a check fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from compose_spec import PyCompose

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "docker-compose.yml"
OVERRIDE = ROOT / "infra" / "docker" / "compose.cpu.yml"


class OverrideLoader(yaml.SafeLoader):
    """YAML with Compose v2's `!reset` / `!override` tags, read as their plain values."""


OverrideLoader.add_constructor("!reset", lambda loader, node: None)
OverrideLoader.add_multi_constructor(
    "!override", lambda loader, suffix, node: loader.construct_object(node, deep=True)
)


def interpolated(path: Path) -> dict:
    """`docker-compose config` of the file (without `name`), as a mapping with `name` back."""
    source = yaml.safe_load(path.read_text())
    name = source.pop("name", None)
    # Beside the original, so relative paths (build contexts, mounts) resolve the same.
    copy = path.parent / f".compose-check-{os.getpid()}.yml"
    try:
        copy.write_text(yaml.safe_dump(source, sort_keys=False))
        run = subprocess.run(
            ["docker-compose", "--project-directory", str(path.parent), "-f", str(copy), "config"],
            capture_output=True, text=True, cwd=path.parent,
        )
    finally:
        copy.unlink(missing_ok=True)
    if run.returncode != 0:
        sys.exit(f"docker-compose config {path.name}: {run.stderr.strip()}")
    config = yaml.safe_load(run.stdout)
    if name is not None:
        config = {"name": name, **config}
    return config


def main() -> None:
    config = interpolated(MAIN)
    try:
        compose = PyCompose.from_yaml(yaml.safe_dump(config))
    except ValueError as e:
        sys.exit(f"{MAIN.name} is not valid Compose: {e}")
    services = set(compose.service_names())
    print(f"{MAIN.name}: valid ({len(services)} services: {', '.join(sorted(services))})")

    override = yaml.load(OVERRIDE.read_text(), Loader=OverrideLoader)
    try:
        PyCompose.from_yaml(yaml.safe_dump(override))
    except ValueError as e:
        sys.exit(f"{OVERRIDE.relative_to(ROOT)} is not valid Compose: {e}")
    unknown = set(override.get("services", {})) - services
    if unknown:
        sys.exit(f"{OVERRIDE.relative_to(ROOT)} overrides services the main file lacks: {sorted(unknown)}")
    print(f"{OVERRIDE.relative_to(ROOT)}: valid, overrides {', '.join(sorted(override['services']))}")


if __name__ == "__main__":
    main()
