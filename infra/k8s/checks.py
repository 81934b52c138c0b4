"""validate.py's checks of one rendering: each returns the problems it found (none: passed)."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import jsonschema
import kubernetes_validate

from manifests import (
    EXAMPLE_SECRETS,
    RABBITMQ_RS,
    ROOT,
    Program,
    config_maps,
    containers,
    effective_env,
    ident,
    pod_templates,
    selector_matches,
)

# The parameters each KEDA scaler used here reads from a trigger's metadata (KEDA's scaler docs),
# and the values it accepts where they are a fixed set.
TRIGGER_METADATA: dict[str, dict[str, Any]] = {
    "rabbitmq": {
        "keys": {
            "host", "hostFromEnv", "usernameFromEnv", "passwordFromEnv", "protocol", "mode",
            "value", "activationValue", "queueName", "vhostName", "useRegex", "pageSize",
            "operation", "timeout", "excludeUnacknowledged", "unsafeSsl",
        },
        "required": {"queueName", "mode", "value"},
        "values": {
            "protocol": {"auto", "http", "amqp"},
            "mode": {"QueueLength", "MessageRate", "DeliverGetRate",
                     "PublishedToDeliveredRatio", "ExpectedQueueConsumptionTime"},
            "operation": {"sum", "max", "avg"},
            "useRegex": {"true", "false"},
            "excludeUnacknowledged": {"true", "false"},
            "unsafeSsl": {"true", "false"},
        },
        "numbers": {"value", "activationValue", "pageSize", "timeout"},
        "metricTypes": {"AverageValue", "Value"},
    },
    "cpu": {
        "keys": {"value", "containerName", "activationValue"},
        "required": {"value"},
        "values": {},
        "numbers": {"value", "activationValue"},
        "metricTypes": {"Utilization", "AverageValue"},
    },
}
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def check_kubernetes(objects: list[dict], version: str) -> list[str]:
    problems = []
    for obj in objects:
        if obj["apiVersion"].startswith("keda.sh/"):
            continue  # check_keda
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            problems.append(f"{ident(obj)}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            problems.append(f"{ident(obj)}: {e.message}")
    return problems


def check_keda(objects: list[dict], schemas: dict[str, Any]) -> list[str]:
    problems = []
    for obj in objects:
        if not obj["apiVersion"].startswith("keda.sh/"):
            continue
        name = ident(obj)
        if obj["apiVersion"] != "keda.sh/v1alpha1" or obj["kind"] not in schemas:
            problems.append(f"{name}: no schema for {obj['apiVersion']} {obj['kind']}")
            continue
        validator = jsonschema.Draft7Validator(schemas[obj["kind"]])
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.path)):
            path = ".".join(str(p) for p in error.path)
            problems.append(f"{name}: {path}: {error.message}")
        meta = obj.get("metadata", {})
        if not DNS_SUBDOMAIN.fullmatch(meta.get("name", "")):
            problems.append(f"{name}: metadata.name is not a DNS subdomain")
        for field in ("labels", "annotations"):
            for k, v in (meta.get(field) or {}).items():
                if not isinstance(v, str):
                    problems.append(f"{name}: metadata.{field}.{k} is not a string")
        if obj["kind"] == "ScaledObject":
            for i, trigger in enumerate(obj.get("spec", {}).get("triggers", [])):
                problems += check_trigger(f"{name}: triggers[{i}]", trigger)
    return problems


def check_trigger(where: str, trigger: dict) -> list[str]:
    rules = TRIGGER_METADATA.get(trigger.get("type", ""))
    if rules is None:
        return [f"{where}: no rules for trigger type {trigger.get('type')!r} in validate.py"]
    problems = []
    metadata = trigger.get("metadata", {}) or {}
    for key in sorted(set(metadata) - rules["keys"]):
        problems.append(f"{where}: metadata.{key} is not a parameter of the {trigger['type']} scaler")
    for key in sorted(rules["required"] - set(metadata)):
        problems.append(f"{where}: metadata.{key} is required")
    for key, allowed in rules["values"].items():
        if key in metadata and metadata[key] not in allowed:
            problems.append(f"{where}: metadata.{key}={metadata[key]!r}, not one of {sorted(allowed)}")
    for key in rules["numbers"]:
        if key in metadata:
            try:
                float(metadata[key])
            except ValueError:
                problems.append(f"{where}: metadata.{key}={metadata[key]!r} is not a number")
    if "metricType" in trigger and trigger["metricType"] not in rules["metricTypes"]:
        problems.append(f"{where}: metricType {trigger['metricType']!r} not one of {sorted(rules['metricTypes'])}")
    if metadata.get("useRegex") == "true" and metadata.get("protocol") != "http":
        problems.append(f"{where}: useRegex needs protocol http")
    return problems


def check_settings(objects: list[dict], program: Program) -> list[str]:
    problems = []
    cms = config_maps(objects)
    for owner, _, spec in pod_templates(objects):
        for c in containers(spec):
            where = f"{ident(owner)} container {c['name']}"
            names = [v["name"] for v in c.get("env", []) or []]
            for name, count in Counter(names).items():
                if count > 1:
                    problems.append(f"{where}: {name} set {count} times")
            for source in c.get("envFrom", []) or []:
                if "secretRef" in source:
                    problems.append(f"{where}: envFrom a Secret: its variable names cannot be checked")
                ref = source.get("configMapRef")
                if ref and ref.get("name") not in cms:
                    problems.append(f"{where}: envFrom ConfigMap {ref.get('name')} is not in the manifests")
            for name, value in effective_env(c, cms).items():
                if name.startswith("MEDINFORM_"):
                    why = program.check(name, value)
                    if why:
                        problems.append(f"{where}: {why}")
    return problems


def check_service_links(objects: list[dict]) -> list[str]:
    return [
        f"{ident(owner)}: enableServiceLinks is {spec.get('enableServiceLinks', 'unset (true)')}, "
        "must be false"
        for owner, _, spec in pod_templates(objects)
        if spec.get("enableServiceLinks") is not False
    ]


def check_pod_security(objects: list[dict]) -> list[str]:
    problems = []
    for owner, _, spec in pod_templates(objects):
        name = ident(owner)
        pod = spec.get("securityContext", {}) or {}
        if pod.get("runAsNonRoot") is not True:
            problems.append(f"{name}: securityContext.runAsNonRoot is not true")
        if not isinstance(pod.get("runAsUser"), int) or pod["runAsUser"] < 10000:
            problems.append(f"{name}: securityContext.runAsUser is not a uid >= 10000 (the image's is 10001)")
        if (pod.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append(f"{name}: securityContext.seccompProfile.type is not RuntimeDefault")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: automountServiceAccountToken is not false")
        if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
            problems.append(f"{name}: shares a host namespace")
        empty_dirs = {v["name"] for v in spec.get("volumes", []) or [] if "emptyDir" in v}
        for c in containers(spec):
            where = f"{name} container {c['name']}"
            sc = c.get("securityContext", {}) or {}
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if sc.get("privileged"):
                problems.append(f"{where}: privileged")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                problems.append(f"{where}: capabilities.drop lacks ALL")
            if (sc.get("capabilities") or {}).get("add"):
                problems.append(f"{where}: adds capabilities")
            if sc.get("runAsUser") == 0 or sc.get("runAsNonRoot") is False:
                problems.append(f"{where}: runs as root")
            resources = c.get("resources", {}) or {}
            for kind in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in (resources.get(kind) or {}):
                        problems.append(f"{where}: no {kind}.{resource}")
            tmp = [m for m in c.get("volumeMounts", []) or [] if m.get("mountPath") == "/tmp"]
            if not tmp or tmp[0]["name"] not in empty_dirs or tmp[0].get("readOnly"):
                problems.append(f"{where}: /tmp is not a writable emptyDir")
    return problems


def check_worker_groups(objects: list[dict], program: Program) -> list[str]:
    problems = []
    if program.lane_templates != ("{prefix}.jobs.{model}", "{prefix}.bulk.{model}"):
        return [
            f"{RABBITMQ_RS.relative_to(ROOT)}: fn lane no longer names the lanes "
            f'"{{}}.jobs.{{model}}" and "{{}}.bulk.{{model}}" (found {program.lane_templates}): '
            "update the worker groups' queueName and this check together"
        ]
    cms = config_maps(objects)
    scaled = {
        o["spec"]["scaleTargetRef"]["name"]: o
        for o in objects
        if o["kind"] == "ScaledObject" and o.get("spec", {}).get("scaleTargetRef", {}).get("name")
    }
    served: dict[str, list[str]] = {}
    always_on = []
    workers = [
        o for o in objects
        if o["kind"] == "Deployment"
        and o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "worker"
    ]
    if not workers:
        return ["no worker Deployment (label app.kubernetes.io/component=worker)"]
    for deployment in workers:
        name = ident(deployment)
        spec = deployment["spec"]["template"]["spec"]
        worker = [c for c in spec.get("containers", []) if "worker" in (c.get("args") or [])]
        if len(worker) != 1:
            problems.append(f"{name}: expected one container running `medinform worker`")
            continue
        env = effective_env(worker[0], cms)
        resources = worker[0].get("resources", {}) or {}
        gpus = (resources.get("limits") or {}).get("nvidia.com/gpu")
        provider = env.get("MEDINFORM_INFERENCE_EXECUTION_PROVIDER") or program.default(
            "MEDINFORM_INFERENCE_EXECUTION_PROVIDER"
        )
        if gpus and provider not in ("cuda", "auto"):
            problems.append(f"{name}: has a GPU but execution provider {provider!r}")
        if provider == "cuda" and not gpus:
            problems.append(f"{name}: execution provider cuda without an nvidia.com/gpu limit")
        if gpus and (resources.get("requests") or {}).get("nvidia.com/gpu", gpus) != gpus:
            problems.append(f"{name}: nvidia.com/gpu request and limit differ")
        models = [m.strip() for m in (env.get("MEDINFORM_WORKER_MODELS") or "").split(",") if m.strip()]
        if not models:
            problems.append(f"{name}: MEDINFORM_WORKER_MODELS is empty (every model): give each group its models")
            continue
        for m in models:
            if m not in program.models:
                problems.append(f"{name}: model {m!r} is not in models/ ({', '.join(program.models)})")
            served.setdefault(m, []).append(name)
        prefix = env.get("MEDINFORM_QUEUE_PREFIX") or program.default("MEDINFORM_QUEUE_PREFIX")
        expected = {
            t.format(prefix=prefix, model=m) for t in program.lane_templates for m in models
        }
        candidates = {
            t.format(prefix=prefix, model=m) for t in program.lane_templates for m in program.models
        }
        candidates |= {f"{prefix}.dead", f"{prefix}.jobs"}
        so = scaled.get(deployment["metadata"]["name"])
        if so is None:
            problems.append(f"{name}: no ScaledObject scales it")
            continue
        if so["spec"].get("minReplicaCount", 0) >= 1:
            always_on.append(name)
        triggers = [t for t in so["spec"].get("triggers", []) if t.get("type") == "rabbitmq"]
        if not triggers:
            problems.append(f"{ident(so)}: no rabbitmq trigger")
            continue
        counted: set[str] = set()
        for t in triggers:
            md = t.get("metadata", {})
            queue = md.get("queueName", "")
            if md.get("useRegex") == "true":
                try:
                    pattern = re.compile(queue)
                except re.error as e:
                    problems.append(f"{ident(so)}: queueName {queue!r}: {e}")
                    continue
                # RabbitMQ's management API matches like re.search (Erlang's re:run).
                counted |= {q for q in candidates if pattern.search(q)}
                if len(expected) > 1 and md.get("operation", "sum") != "sum":
                    problems.append(f"{ident(so)}: operation {md['operation']} over several queues: use sum")
            else:
                counted.add(queue)
            if md.get("mode") != "QueueLength":
                problems.append(f"{ident(so)}: mode {md.get('mode')!r}, expected QueueLength")
        if counted != expected:
            missing, extra = sorted(expected - counted), sorted(counted - expected)
            problems.append(
                f"{ident(so)}: its triggers count {sorted(counted)}, the group's queues are "
                f"{sorted(expected)}" + (f"; missing {missing}" if missing else "")
                + (f"; not the group's {extra}" if extra else "")
            )
    for m in program.models:
        if m not in served:
            problems.append(f"model {m}: no worker group serves it (its jobs would wait forever)")
        elif len(served[m]) > 1:
            problems.append(f"model {m}: served by {', '.join(served[m])}; one group each")
    if workers and not always_on:
        problems.append(
            "every worker group may scale to zero: one must keep a replica (workers also run "
            "the re-publisher, the orphan sweep and the webhook sender)"
        )
    return problems


def check_autoscaling(objects: list[dict]) -> list[str]:
    problems = []
    by_key = {(o["kind"], o["metadata"]["name"]) for o in objects}
    auths = {o["metadata"]["name"] for o in objects if o["kind"] == "TriggerAuthentication"}
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    scalers: dict[tuple[str, str], list[str]] = {}
    for o in objects:
        if o["kind"] == "ScaledObject":
            ref = o["spec"]["scaleTargetRef"]
            target = (ref.get("kind", "Deployment"), ref["name"])
            for t in o["spec"].get("triggers", []):
                auth = (t.get("authenticationRef") or {}).get("name")
                kind = (t.get("authenticationRef") or {}).get("kind", "TriggerAuthentication")
                if auth and kind == "TriggerAuthentication" and auth not in auths:
                    problems.append(f"{ident(o)}: TriggerAuthentication {auth} is not in the manifests")
                if t.get("type") in ("cpu", "memory") and target[1] in deployments:
                    spec = deployments[target[1]]["spec"]["template"]["spec"]
                    for c in spec.get("containers", []):
                        if t["type"] not in ((c.get("resources") or {}).get("requests") or {}):
                            problems.append(f"{ident(o)}: {t['type']} trigger, but container {c['name']} requests no {t['type']}")
            if o["spec"].get("minReplicaCount", 0) == 0 and all(
                t.get("type") in ("cpu", "memory") for t in o["spec"].get("triggers", [])
            ):
                problems.append(f"{ident(o)}: cpu/memory triggers cannot scale from zero: minReplicaCount >= 1")
        elif o["kind"] == "HorizontalPodAutoscaler":
            ref = o["spec"]["scaleTargetRef"]
            target = (ref["kind"], ref["name"])
        else:
            continue
        scalers.setdefault(target, []).append(ident(o))
        if target not in by_key:
            problems.append(f"{ident(o)}: its target {target[0]}/{target[1]} is not in the manifests")
    for target, owners in scalers.items():
        if len(owners) > 1:
            problems.append(f"{target[0]}/{target[1]}: {len(owners)} autoscalers ({', '.join(owners)}) would fight")
    for name, d in deployments.items():
        if ("Deployment", name) not in scalers:
            problems.append(f"Deployment/{name}: no autoscaler")
        elif "replicas" in d["spec"]:
            problems.append(f"Deployment/{name}: sets replicas, which its autoscaler owns (every apply would reset it)")
    return problems


def check_references(objects: list[dict], example_secrets: dict[str, set[str]]) -> list[str]:
    problems = []
    cms = config_maps(objects)
    accounts = {o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount"}
    pods = [(owner, meta.get("labels", {}) or {}, spec) for owner, meta, spec in pod_templates(objects)]

    def secret_ref(where: str, name: str, key: str | None) -> None:
        if name not in example_secrets:
            problems.append(f"{where}: Secret {name} is not in {EXAMPLE_SECRETS.relative_to(ROOT)}")
        elif key is not None and key not in example_secrets[name]:
            problems.append(f"{where}: key {key} of Secret {name} is not in {EXAMPLE_SECRETS.relative_to(ROOT)}")

    for owner, _, spec in pods:
        name = ident(owner)
        account = spec.get("serviceAccountName")
        if account and account not in accounts:
            problems.append(f"{name}: ServiceAccount {account} is not in the manifests")
        for c in containers(spec):
            where = f"{name} container {c['name']}"
            ports = {p.get("name") for p in c.get("ports", []) or []} | {
                p["containerPort"] for p in c.get("ports", []) or []
            }
            for var in c.get("env", []) or []:
                ref = (var.get("valueFrom") or {})
                if "secretKeyRef" in ref:
                    secret_ref(f"{where} {var['name']}", ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])
                if "configMapKeyRef" in ref:
                    cm = ref["configMapKeyRef"]
                    if cm["key"] not in cms.get(cm["name"], {}):
                        problems.append(f"{where} {var['name']}: ConfigMap key {cm['name']}/{cm['key']} not in the manifests")
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
                if port is not None and port not in ports:
                    problems.append(f"{where}: {probe} port {port} is not a port of the container")
    for o in objects:
        kind, spec = o["kind"], o.get("spec", {}) or {}
        if kind == "TriggerAuthentication":
            for ref in spec.get("secretTargetRef", []):
                secret_ref(ident(o), ref["name"], ref["key"])
        if kind == "Service":
            matched = [p for p in pods if selector_matches({"matchLabels": spec.get("selector", {})}, p[1])]
            if not matched:
                problems.append(f"{ident(o)}: its selector matches no pod")
            for port in spec.get("ports", []):
                target = port.get("targetPort", port["port"])
                for owner, _, pspec in matched:
                    names = {p.get("name") for c in pspec.get("containers", []) for p in c.get("ports", []) or []}
                    numbers = {p["containerPort"] for c in pspec.get("containers", []) for p in c.get("ports", []) or []}
                    if target not in names | numbers:
                        problems.append(f"{ident(o)}: targetPort {target} is not a port of {ident(owner)}")
        if kind in ("PodDisruptionBudget", "NetworkPolicy"):
            selector = spec.get("selector") if kind == "PodDisruptionBudget" else spec.get("podSelector")
            if not any(selector_matches(selector or {}, p[1]) for p in pods):
                problems.append(f"{ident(o)}: its selector matches no pod")
    return problems


def check_shutdown(objects: list[dict], program: Program) -> list[str]:
    problems = []
    cms = config_maps(objects)
    for owner, meta, spec in pod_templates(objects):
        name = ident(owner)
        grace = spec.get("terminationGracePeriodSeconds")
        if grace is None:
            problems.append(f"{name}: terminationGracePeriodSeconds unset (30 s by default): say it")
            continue
        for c in spec.get("containers", []):
            if "api" not in (c.get("args") or []) and "serve" not in (c.get("args") or []):
                continue
            env = effective_env(c, cms)
            drain = int(env.get("MEDINFORM_SERVER_SHUTDOWN_GRACE_SECS")
                        or program.default("MEDINFORM_SERVER_SHUTDOWN_GRACE_SECS"))
            pre_stop = ((c.get("lifecycle") or {}).get("preStop") or {})
            sleep = int((pre_stop.get("sleep") or {}).get("seconds", 0))
            if not sleep:
                problems.append(f"{name}: no preStop sleep: the pod stops accepting before it is out of the Service's endpoints")
            needed = sleep + drain + 5
            if grace < needed:
                problems.append(
                    f"{name}: terminationGracePeriodSeconds {grace} < preStop {sleep} s + "
                    f"server.shutdown_grace_secs {drain} s + 5 s = {needed}"
                )
    return problems
