"""The model card: what a clinical reviewer reads before a model sees patients.

One Markdown page per run, logged with the run and kept with the registered version: intended
use, the data it learnt from and was tested on, test metrics with their confidence intervals,
metrics per slice, the threshold and why, the gate report and the known limitations.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from medimg.config import Config
from medimg.registry.gates import GateReport

CARD_METRICS = (("accuracy", "Accuracy"), ("precision", "Precision (PPV)"),
                ("recall", "Recall (sensitivity)"), ("specificity", "Specificity"),
                ("npv", "NPV"), ("f1", "F1"), ("roc_auc", "ROC-AUC"), ("pr_auc", "PR-AUC"),
                ("brier", "Brier score (lower is better)"),
                ("ece", "Expected calibration error (lower is better)"))


def _number(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "n/a"


def _composition(manifest: pd.DataFrame) -> list[str]:
    counts = manifest.groupby(["split", "label"]).size().unstack(fill_value=0)
    labels = list(counts.columns)
    lines = ["| split | " + " | ".join(labels) + " | images | patients |",
             "| --- | " + " | ".join("---" for _ in labels) + " | --- | --- |"]
    for split in ("train", "val", "test"):
        if split not in counts.index:
            continue
        rows = manifest[manifest["split"] == split]
        cells = " | ".join(str(int(counts.loc[split, label])) for label in labels)
        lines.append(f"| {split} | {cells} | {len(rows)} | {rows['patient_id'].nunique()} |")
    return lines


def render_model_card(
    *,
    config: Config,
    metrics: Mapping[str, object],
    lineage: Mapping[str, str],
    manifest: pd.DataFrame,
    gates: GateReport,
    champion_checks: GateReport | None = None,
    version: str | None = None,
    run_id: str = "",
) -> str:
    """The card as Markdown."""
    names = list(config.base.class_names)
    positive = names[-1] if len(names) == 2 else None
    ci = metrics.get("ci") or {}
    boot = metrics.get("bootstrap") or {}
    level = boot.get("confidence", config.evaluate.confidence)
    point = metrics.get("operating_point") or {}
    registered = (f"registered as version {version}" if version
                  else "not registered: it failed a gate")
    lines = [
        f"# Model card: {config.registry.model_name}",
        "",
        f"MLflow run `{run_id}`, {registered}.",
        "",
        "## Intended use",
        "",
        f"Classifies {config.base.image_size}x{config.base.image_size} "
        f"{'greyscale' if config.base.channels == 1 else 'colour'} medical images into "
        f"{', '.join(names)}"
        + (f", flagging `{positive}` (the positive class) for a clinician to review." if positive
           else ".")
        + " It supports a clinician's reading and does not replace it; it has not been cleared "
        "as a medical device. Use it only on images like those below: same modality, view, "
        "acquisition and population.",
        "",
        "## Data",
        "",
        f"Data version (DVC, manifest md5) `{lineage.get('data_version', '')}`, code commit "
        f"`{lineage.get('git_commit', '')}`, params digest `{lineage.get('params_digest', '')}`, "
        f"test split hash `{lineage.get('test_split_hash', '')}`. Patients are pseudonymous and "
        "never split across train, validation and test.",
        "",
        *_composition(manifest),
        "",
        "## Threshold",
        "",
        f"Decision threshold **{_number(metrics.get('threshold'))}** on the probability of "
        f"`{positive or 'each class'}`"
        + (f", chosen on the validation split by `{point.get('method')}`: {point.get('reason')}. "
           f"On validation it gave recall {_number(point.get('recall'))}, precision "
           f"{_number(point.get('precision'))} and specificity "
           f"{_number(point.get('specificity'))}." if point else "."),
        "",
        f"## Test metrics (n = {metrics.get('n')}, locked test split)",
        "",
        f"Intervals: {level:.0%} percentile bootstrap over {boot.get('resamples', 0)} resamples of "
        f"{boot.get('patients', 'the')} patients (all images of a drawn patient together).",
        "",
        f"| metric | value | {level:.0%} CI |",
        "| --- | --- | --- |",
    ]
    for key, label in CARD_METRICS:
        if key in metrics:
            bounds = ci.get(key)
            interval = f"{bounds['low']:.3f} to {bounds['high']:.3f}" if bounds else "n/a"
            lines.append(f"| {label} | {_number(metrics[key])} | {interval} |")
    lines += ["", f"Confusion matrix (rows true, columns predicted; {', '.join(names)}): "
              f"`{metrics.get('confusion_matrix')}`", ""]
    slices = metrics.get("slices") or {}
    lines += ["## Metrics per slice", ""]
    if not slices:
        lines += ["No slices were asked for (`evaluate.slices` in params.yaml): performance "
                  "across sites, sexes, ages or views is unknown.", ""]
    for column, groups in slices.items():
        lines += [f"**{column}**", "", "| value | n | recall | specificity | precision | F1 |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for value, m in groups.items():
            lines.append(f"| {value} | {m['n']} | {_number(m.get('recall'))} | "
                         f"{_number(m.get('specificity'))} | {_number(m.get('precision'))} | "
                         f"{_number(m.get('f1'))} |")
        lines.append("")
    lines += ["## Gate report", "", "| check | metric | value | bound | result |",
              "| --- | --- | --- | --- | --- |"]
    for check in [*gates.checks, *(champion_checks.checks if champion_checks else [])]:
        lines.append(f"| {check.name} | {check.metric} | {_number(check.value)} | "
                     f"{_number(check.bound)} | {'pass' if check.passed else 'FAIL'} |")
    if champion_checks is None and version:
        lines.append("")
        lines.append("No champion to compare with: the absolute gates alone applied.")
    if config.evaluate.gradcam_cases:
        # as evaluation chose the grid's rows: disease outcomes unless every class is positive
        named = set(metrics.get("positive_classes") or names) != set(names)
        outcomes = ("true and false positives and negatives" if named
                    else "correct and wrong predictions, for the class predicted")
        lines += ["", "## What the model looks at", "",
                  "`plots/gradcam.png` overlays Grad-CAM of the "
                  + ("disease score" if named else "predicted class's score")
                  + f" on the {config.evaluate.gradcam_cases} most confident test cases of each "
                  f"outcome ({outcomes}); `plots/gradcam_cases.csv` names them. Review the "
                  "errors among them before clinical use. Grad-CAM is coarse (the last feature "
                  "map's resolution) and shows where evidence was found, not why; it is not a "
                  "segmentation."]
    lines += [
        "",
        "## Limitations",
        "",
        f"- Trained and tested on {len(manifest)} images from the sources in this data version "
        "only; performance on other scanners, sites or populations is not known.",
        "- The intervals describe sampling variation of the test patients, not shifts in the "
        "population, the equipment or the labelling.",
        "- Labels are as given by the sources; their own error rate is not modelled.",
        "- Calibration is measured on the test split; probabilities are not guaranteed to be "
        "calibrated elsewhere.",
        "",
    ]
    return "\n".join(lines)
