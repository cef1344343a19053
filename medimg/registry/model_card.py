"""The model card: what a clinical reviewer reads before a model sees patients.

One Markdown page per run, logged with the run and kept with the registered version: intended
use, the data it learnt from and was tested on, test metrics with their confidence intervals,
metrics per slice, the threshold and why, the gate report and the known limitations.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from medimg.config import Config
from medimg.metric_table import METRICS
from medimg.registry.champion import Comparison
from medimg.registry.gates import GateReport


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


def _check_passed(validation: Mapping[str, object] | None, name: str) -> bool | None:
    checks = (validation or {}).get("checks")
    for check in checks if isinstance(checks, list) else []:
        if isinstance(check, Mapping) and check.get("name") == name:
            return bool(check.get("success"))
    return None


def _patient_statement(manifest: pd.DataFrame, separated: bool | None) -> str:
    """What the data contract could check about patients across splits, and no more.

    Args:
        separated: the result of the contract's ``patient_in_one_split`` check (None: not
            run, or no report).
    """
    # ingest marks an image without a patient id as its own patient (patient_source "image")
    missing = int((manifest["patient_source"].astype("string") != "source").sum())
    if missing == len(manifest):
        return (f"Patient separation could not be checked: none of the {missing} images had a "
                "patient id, so each counts as its own patient, and two films of one patient "
                "may sit in different splits.")
    if separated is None:
        return ("Patient separation was not verified: the data contract's report is missing, so "
                "whether a patient's images sit in more than one split is unknown.")
    if not separated:
        return ("Patients are NOT kept to one split: the data contract's patient_in_one_split "
                "check failed (it was allowed as a warning), so some patients' images sit in "
                "more than one of train, validation and test.")
    if missing == 0:
        return ("Patients are pseudonymous and never split across train, validation and test "
                "(every image had a patient id, and the data contract checked it).")
    return (f"Patients with an id are pseudonymous and never split across train, validation "
            f"and test; {missing} of {len(manifest)} images had no patient id, so for them "
            "patient separation could not be checked (each counts as its own patient).")


def _threshold_section(metrics: Mapping[str, object], positive: str | None) -> list[str]:
    point = metrics.get("operating_point") or {}
    if metrics.get("threshold") is None:  # several classes: no threshold is used
        return ["## Decision rule", "",
                "**Arg-max**: each image is given the class with the highest probability; no "
                "threshold is used."]
    return [
        "## Decision rule", "",
        f"Decision threshold **{_number(metrics.get('threshold'))}** on the probability of "
        f"`{positive}`"
        + (f", chosen on the validation split by `{point.get('method')}`: {point.get('reason')}. "
           f"On validation it gave recall {_number(point.get('recall'))}, precision "
           f"{_number(point.get('precision'))} and specificity "
           f"{_number(point.get('specificity'))}." if point else " (fixed).")]


def _signed(value: object) -> str:
    return f"{value:+.3f}" if isinstance(value, int | float) else "n/a"


def _comparison_section(comparison: Comparison, level: float) -> list[str]:
    """Both models' metrics on the same test images and each paired difference."""
    v = comparison.champion_version
    lines = ["## Against the champion", ""]
    if comparison.reason:
        return [*lines, f"Not compared: {comparison.reason}; the comparison fails closed.", ""]
    lines += [f"Both models predicted the same test images; the interval of each difference "
              f"(this model minus v{v}) is a paired {level:.0%} bootstrap over patients.", "",
              f"| metric | this model | champion v{v} | difference | {level:.0%} CI |",
              "| --- | --- | --- | --- | --- |"]
    for metric, d in comparison.differences.items():
        interval = (f"{_signed(d.get('low'))} to {_signed(d.get('high'))}"
                    if d.get("low") is not None else "n/a")
        lines.append(f"| {metric} | {_number(d.get('challenger'))} | "
                     f"{_number(d.get('champion'))} | {_signed(d.get('difference'))} | "
                     f"{interval} |")
    return [*lines, ""]


def render_model_card(
    *,
    config: Config,
    metrics: Mapping[str, object],
    lineage: Mapping[str, str],
    manifest: pd.DataFrame,
    gates: GateReport,
    champion_checks: GateReport | None = None,
    comparison: Comparison | None = None,
    version: str | None = None,
    run_id: str = "",
    validation: Mapping[str, object] | None = None,
) -> str:
    """The card as Markdown. ``validation`` is the data contract's report
    (``reports/validation.json``), which says what was checked about patients."""
    names = list(config.base.class_names)
    positive = names[-1] if len(names) == 2 else None
    ci = metrics.get("ci") or {}
    boot = metrics.get("bootstrap") or {}
    level = boot.get("confidence", config.evaluate.confidence)
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
        f"test split hash `{lineage.get('test_split_hash', '')}`. " + _patient_statement(
            manifest, _check_passed(validation, "patient_in_one_split")),
        "",
        *_composition(manifest),
        "",
        *_threshold_section(metrics, positive),
        "",
        f"## Test metrics (n = {metrics.get('n')}, locked test split)",
        "",
        f"Intervals: {level:.0%} percentile bootstrap over {boot.get('resamples', 0)} resamples of "
        f"{boot.get('patients', 'the')} patients (all images of a drawn patient together).",
        "",
        f"| metric | value | {level:.0%} CI |",
        "| --- | --- | --- |",
    ]
    for key, label in ((m.name, m.label) for m in METRICS):
        if key in metrics:
            bounds = ci.get(key)
            interval = f"{bounds['low']:.3f} to {bounds['high']:.3f}" if bounds else "n/a"
            lines.append(f"| {label} | {_number(metrics[key])} | {interval} |")
    left_out = {k: b["left_out"] for k, b in ci.items() if b.get("left_out")}
    if left_out:
        lines += ["", "Left out of an interval: the resamples in which a metric has no value "
                  "(one class drawn): " + ", ".join(f"{k} {n}" for k, n in left_out.items())
                  + ". Ratios with nothing to count count as 0, as in the point estimate."]
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
        value, bound = _number(check.value), _number(check.bound)
        if check.name.startswith("min_test_") and check.value is not None:  # image counts
            value, bound = f"{check.value:.0f}", f"{check.bound:.0f}"
        if check.interval:
            value = f"{_signed(check.value)} ({_signed(check.interval[0])} to " \
                    f"{_signed(check.interval[1])})"
        lines.append(f"| {check.name} | {check.metric} | {value} | "
                     f"{bound} | {'pass' if check.passed else 'FAIL'} |")
    lines.append("")
    if comparison is not None:
        lines += _comparison_section(comparison, level)
    elif champion_checks is None and version:
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
