#!/usr/bin/env python3
"""Offline checks of the Kubernetes manifests under infra/k8s (run by validate.sh, in the venv
that it makes from requirements.txt).

The base and each overlay are rendered by render.py (kustomize's semantics for the subset the
manifests use), then, for each rendering:

- kubernetes schemas: every built-in object against the Kubernetes API's schemas
  (kubernetes-validate, strict: unknown fields are errors), for the oldest Kubernetes the
  manifests support and the newest kubernetes-validate knows;
- KEDA schemas: every ScaledObject and TriggerAuthentication against the openAPIV3Schema of
  KEDA's CRDs (schemas/keda/, made strict the same way), and each trigger's metadata against
  the parameters its scaler reads (KEDA ignores a misspelt one silently);
- settings: every MEDINFORM_* variable a container gets (env, and ConfigMaps by envFrom) is a
  setting of medinform.example.toml (the file a Rust test keeps in step with the code) or a
  variable the command line reads, with a value of the setting's type;
- service links: enableServiceLinks is false in every pod template (a Service's links would put
  MEDINFORM_API_SERVICE_HOST and the like into the environment, which MedInform refuses);
- pod security: non-root, read-only root file system, no privilege escalation, every capability
  dropped, RuntimeDefault seccomp, no service-account token, requests and limits, /tmp writable;
- worker groups: each group's MEDINFORM_WORKER_MODELS names models of models/, its KEDA trigger
  counts exactly those models' RabbitMQ queues (named as core/src/queue/rabbitmq.rs names
  them), every model has one group, one group never scales to zero, and a worker with a GPU
  runs the cuda (or auto) provider and one with cuda has a GPU;
- autoscaling: one autoscaler per Deployment, KEDA's ScaledObject, with an existing target and
  TriggerAuthentication, and no `replicas` fighting it;
- references: ConfigMaps, Secrets and keys (examples/secrets.example.yaml), the ServiceAccount,
  ports named by probes and Services, and selectors of Services, PodDisruptionBudgets and
  NetworkPolicies that select pods;
- graceful shutdown: the API's terminationGracePeriodSeconds covers its preStop sleep plus
  server.shutdown_grace_secs plus 5 s, and every pod says its grace period;
- checkov (overlays only, the renderings that are applied): no failed check except the ones
  checkov.yaml skips, with its reasons;
- kubectl kustomize: where kubectl is installed, its rendering equals render.py's (skipped
  elsewhere).

Prints one line per check and, last, `k8s: N passed, M failed, K skipped`. Exit status 1 when
a check failed.
"""

from __future__ import annotations

import argparse
import difflib
import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Callable

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import checks  # noqa: E402
import render  # noqa: E402
from manifests import HERE, ROOT, Program, example_secrets, load_yaml, strict  # noqa: E402

TARGETS = {
    "base": HERE / "base",
    "cpu": HERE / "overlays" / "cpu",
    "gpu": HERE / "overlays" / "gpu",
}
# The renderings that are applied to a cluster (checkov runs on these).
APPLIED = ("cpu", "gpu")
# The oldest Kubernetes the manifests support (the preStop `sleep` action is on by default from
# 1.30) and the newest that the pinned kubernetes-validate has schemas for.
KUBERNETES_VERSIONS = ("1.30", "1.37")
KEDA_SCHEMAS = {
    "ScaledObject": HERE / "schemas" / "keda" / "scaledobject-v1alpha1.yaml",
    "TriggerAuthentication": HERE / "schemas" / "keda" / "triggerauthentication-v1alpha1.yaml",
}
CHECKOV_CONFIG = HERE / "checkov.yaml"


# --- the results -------------------------------------------------------------------------------


class Results:
    def __init__(self) -> None:
        self.passed = self.failed = self.skipped = 0

    def record(self, name: str, problems: list[str] | None, note: str = "") -> None:
        """problems None: skipped (note says why); empty: passed."""
        if problems is None:
            self.skipped += 1
            print(f"skip  {name}: {note}")
        elif problems:
            self.failed += 1
            print(f"FAIL  {name}")
            for p in problems:
                print(f"        {p}")
        else:
            self.passed += 1
            print(f"ok    {name}" + (f" ({note})" if note else ""))
        sys.stdout.flush()

    def run(self, name: str, check: Callable[[], list[str]]) -> None:
        try:
            problems = check()
        except Exception as e:  # a check that breaks is a failed check, with its reason
            problems = [f"the check itself failed: {type(e).__name__}: {e}"]
        self.record(name, problems)



# --- the tools ---------------------------------------------------------------------------------


def check_checkov(objects: list[dict], target: str, venv_bin: Path) -> list[str]:
    checkov = venv_bin / "checkov"
    if not checkov.exists():
        found = shutil.which("checkov")
        if not found:
            return ["checkov is not installed (validate.sh installs requirements.txt)"]
        checkov = Path(found)
    with tempfile.TemporaryDirectory(prefix=f"medinform-k8s-{target}-") as tmp:
        rendered = Path(tmp) / f"{target}.yaml"
        rendered.write_text(render.dump(objects), encoding="utf-8")
        proc = subprocess.run(
            [str(checkov), "--config-file", str(CHECKOV_CONFIG), "-f", str(rendered), "-o", "json"],
            capture_output=True, text=True, timeout=600,
        )
    try:
        reports = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return [f"checkov exited {proc.returncode} without a JSON report: {proc.stderr.strip()[-2000:]}"]
    if isinstance(reports, dict):
        reports = [reports]
    problems = []
    summary = Counter()
    for report in reports:
        results = report.get("results", {})
        summary["passed"] += len(results.get("passed_checks", []))
        summary["skipped"] += len(results.get("skipped_checks", []))
        for failed in results.get("failed_checks", []):
            severity = failed.get("severity") or "no severity"
            problems.append(
                f"{failed['check_id']} ({severity}) {failed['check_name']}: {failed['resource']}"
            )
        if report.get("summary", {}).get("parsing_errors"):
            problems.append(f"checkov could not parse: {report['summary']['parsing_errors']}")
    if not reports or summary["passed"] == 0:
        problems.append("checkov ran no check")
    skipped = ", ".join(load_yaml(CHECKOV_CONFIG).get("skip-check", [])) or "none"
    print(f"        checkov {target}: {summary['passed']} passed, {len(problems)} failed; "
          f"not run (checkov.yaml): {skipped}")
    return problems


def check_kubectl(objects: list[dict], folder: Path, kubectl: str) -> list[str]:
    proc = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=300
    )
    if proc.returncode != 0:
        return [f"kubectl kustomize failed: {proc.stderr.strip()[-2000:]}"]
    theirs = {render.object_key(o): o for o in yaml.safe_load_all(proc.stdout) if o}
    ours = {render.object_key(o): o for o in objects}
    problems = []
    for key in sorted(set(ours) ^ set(theirs)):
        problems.append(f"{key[1]}/{key[3]}: only in {'render.py' if key in ours else 'kubectl'}'s output")
    for key in sorted(set(ours) & set(theirs)):
        if ours[key] != theirs[key]:
            a = json.dumps(ours[key], indent=1, sort_keys=True).splitlines()
            b = json.dumps(theirs[key], indent=1, sort_keys=True).splitlines()
            diff = list(difflib.unified_diff(a, b, "render.py", "kubectl", lineterm="", n=1))
            problems.append(f"{key[1]}/{key[3]} differs:\n          " + "\n          ".join(diff[:30]))
    return problems


# --- main --------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--settings-file", type=Path, default=ROOT / "medinform.example.toml",
        help="the settings that exist (default: medinform.example.toml)",
    )
    parser.add_argument("--keep", type=Path, help="write each rendering to DIR/TARGET.yaml")
    parser.add_argument("--no-checkov", action="store_true", help="skip checkov (faster)")
    parser.add_argument(
        "--kubectl", default=shutil.which("kubectl"),
        help="kubectl for the comparison of renderings (default: from PATH; '' to skip)",
    )
    args = parser.parse_args()

    results = Results()
    program = Program(args.settings_file)
    keda_schemas = {kind: strict(load_yaml(path)) for kind, path in KEDA_SCHEMAS.items()}
    secrets, secret_docs = example_secrets()
    venv_bin = Path(sys.executable).parent

    results.run(
        "examples/secrets.example.yaml: kubernetes schemas",
        lambda: [p for v in KUBERNETES_VERSIONS for p in checks.check_kubernetes(secret_docs, v)],
    )
    for target, folder in TARGETS.items():
        try:
            objects = render.render(folder)
        except (render.RenderError, yaml.YAMLError, OSError) as e:
            results.record(f"{target}: render", [str(e)])
            continue
        results.record(f"{target}: render", [], f"{len(objects)} objects")
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            (args.keep / f"{target}.yaml").write_text(render.dump(objects), encoding="utf-8")
        for version in KUBERNETES_VERSIONS:
            results.run(
                f"{target}: kubernetes {version} schemas (strict)",
                lambda v=version: checks.check_kubernetes(objects, v),
            )
        results.run(f"{target}: KEDA schemas and trigger parameters", lambda: checks.check_keda(objects, keda_schemas))
        results.run(f"{target}: MEDINFORM_* settings exist", lambda: checks.check_settings(objects, program))
        results.run(f"{target}: enableServiceLinks false", lambda: checks.check_service_links(objects))
        results.run(f"{target}: pod security", lambda: checks.check_pod_security(objects))
        results.run(f"{target}: worker groups and queues", lambda: checks.check_worker_groups(objects, program))
        results.run(f"{target}: one autoscaler per Deployment", lambda: checks.check_autoscaling(objects))
        results.run(f"{target}: references", lambda: checks.check_references(objects, secrets))
        results.run(f"{target}: graceful shutdown", lambda: checks.check_shutdown(objects, program))
        if target in APPLIED:
            if args.no_checkov:
                results.record(f"{target}: checkov", None, "--no-checkov")
            else:
                results.run(f"{target}: checkov", lambda: check_checkov(objects, target, venv_bin))
        if args.kubectl:
            results.run(
                f"{target}: kubectl kustomize renders the same",
                lambda: check_kubectl(objects, folder, args.kubectl),
            )
        else:
            results.record(f"{target}: kubectl kustomize renders the same", None, "no kubectl on PATH")
    print(f"k8s: {results.passed} passed, {results.failed} failed, {results.skipped} skipped")
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main())
