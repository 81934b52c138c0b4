"""The benchmark's own virtual environment (standard library only: this runs before it exists).

Made under target/ with the interpreter that started run.py, filled from requirements.txt, and
remade when that file changes (its SHA-256 is stamped inside the environment). run.py then
re-executes itself inside it, with the peers folder and the training pipeline on PYTHONPATH.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import MutableMapping
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
REQUIREMENTS = HERE / "requirements.txt"
STAMP = "peers-requirements.sha256"
PATHS = [str(HERE), str(REPO / "models" / "training")]


def log(message: str) -> None:
    print(f"[peers] {message}", file=sys.stderr, flush=True)


def requirements_hash() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def is_active(venv: Path) -> bool:
    """Whether this interpreter is the environment's."""
    return Path(sys.prefix).resolve() == venv.resolve()


def ensure(venv: Path) -> Path:
    """The environment's interpreter, after making or remaking the environment if needed.

    When one pinned package does not install, the others are installed one by one and the
    environment is left unstamped (the next run tries again); the peer that needs the missing
    package then fails to start, and the results table says so.
    """
    python = venv / "bin" / "python"
    stamp = venv / STAMP
    wanted = requirements_hash()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        return python
    if sys.version_info < (3, 11):  # noqa: UP036 (this runs under whatever python3 started it)
        raise SystemExit(f"Python >= 3.11 is needed (the training pipeline uses tomllib), not {sys.version}")
    log(f"creating {venv} from {REQUIREMENTS.relative_to(REPO)} (a few minutes, once)")
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if subprocess.run([*pip, "-r", str(REQUIREMENTS)]).returncode == 0:
        stamp.write_text(wanted + "\n")
        return python
    failed = []
    for line in REQUIREMENTS.read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement and subprocess.run([*pip, requirement]).returncode != 0:
            failed.append(requirement)
    log(f"could not install {', '.join(failed) or 'the requirements together'}; going on without")
    return python


def add_paths(env: MutableMapping[str, str]) -> None:
    """Puts the peers folder and the training pipeline on `env`'s PYTHONPATH (the servers this
    process starts inherit it) and on this process's sys.path."""
    present = [path for path in env.get("PYTHONPATH", "").split(os.pathsep) if path]
    missing = [path for path in PATHS if path not in present]
    env["PYTHONPATH"] = os.pathsep.join(missing + present)
    sys.path[:0] = [path for path in PATHS if path not in sys.path]


def reexec(python: Path, argv: list[str]) -> None:
    """Replaces this process with run.py under `python`."""
    env = dict(os.environ)
    add_paths(env)
    os.execve(str(python), [str(python), str(HERE / "run.py"), *argv], env)
