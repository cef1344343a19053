"""A pipeline run in one markdown page: the Prefect artifact a team reads in Prefect's UI.

It holds what ran and what was up to date, the data (images and patients per split and class),
the test metrics with their intervals, the gate table, the decision, and where the MLflow run is.
Every figure comes from the workspace's own reports, so a run that changed nothing still shows
the current state, marked as coming from the last run that produced it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from medimg.config import Config
from medimg.data.manifest import load_manifest
from medimg.data.splits import SPLIT_ORDER
from medimg.metric_table import BY_NAME, HEADLINE_METRICS
from medimg.mlflow_datasets import split_profile
from medimg.registry.gates import evaluate_gates
from medimg.workspace import Workspace


@dataclass(frozen=True)
class RunFacts:
    """What the flow knows of its run that the workspace's files do not say."""

    name: str
    ran: Sequence[str]
    skipped: Sequence[str]
    ingest: str = ""  # the ingest equation
    mlflow_link: str = ""  # the run's page in the MLflow UI, or how to open it
    failure: str = ""  # "<stage>: <one-line reason>" for a failed run
    experiment: str = ""  # the DVC experiment the run was saved as


def cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _data_section(ws: Workspace, config: Config) -> list[str]:
    if not ws.manifest_path.is_file():
        return ["No manifest yet."]
    manifest = load_manifest(ws.manifest_path)
    classes = list(config.base.class_names)
    lines = ["| split | images | patients | " + " | ".join(map(cell, classes)) + " |",
             "|---" * (3 + len(classes)) + "|"]
    for split in SPLIT_ORDER:
        profile = split_profile(manifest, split, classes)
        lines.append(f"| {split} | {profile['images']} | {profile['patients']} | "
                     + " | ".join(str(n) for n in profile["per_class"].values()) + " |")
    return lines


def _metrics_section(metrics: dict) -> list[str]:
    ci = metrics.get("ci") or {}
    level = (metrics.get("bootstrap") or {}).get("confidence", 0.95)
    rule = (f"threshold {metrics['threshold']:.4g}" if metrics.get("threshold") is not None
            else "arg-max")
    lines = [f"Test split, n={metrics.get('n', '?')}, decision by {rule}; intervals are "
             f"{level:.0%} patient-bootstrap.", "",
             "| metric | value | interval |", "|---|---|---|"]
    for key in HEADLINE_METRICS:
        if isinstance(metrics.get(key), int | float):
            bounds = ci.get(key) or {}
            interval = (f"{bounds['low']:.3f} to {bounds['high']:.3f}"
                        if "low" in bounds and "high" in bounds else "-")
            lines.append(f"| {BY_NAME[key].label} | {metrics[key]:.3f} | {interval} |")
    return lines


def _gate_section(metrics: dict, config: Config) -> list[str]:
    report = evaluate_gates(metrics, config.gates)
    lines = ["| gate | metric | value | bound | result |", "|---|---|---|---|---|"]
    for c in report.checks:
        value = "-" if c.value is None else f"{c.value:.3f}"
        bound = "-" if c.bound is None else f"{c.bound:.3f}"
        lines.append(f"| {c.name} | {c.metric} | {value} | {bound} | "
                     f"{'pass' if c.passed else '**fail**'} |")
    return lines


def _decision(ws: Workspace, registration: Any, facts: RunFacts) -> str:
    if facts.failure:
        done = (f" Version {registration.version} was registered before it."
                if registration is not None and registration.registered else
                " Nothing was registered.")
        return f"**Failed** at {cell(facts.failure)}.{done}"
    if registration is not None:
        if not registration.registered:
            return ("**Not registered**: "
                    + "; ".join(cell(c.reason) for c in registration.gates.failed) + ".")
        aliases = ", ".join(registration.aliases) or "no alias"
        return f"**Registered as version {registration.version}** ({aliases})."
    if ws.registration_path.is_file():
        last = json.loads(ws.registration_path.read_text())
        promoted = "promoted" if last.get("promoted") else "not promoted"
        verdict = (f"version {last['version']}, {promoted}" if last.get("version")
                   else "not registered (gates failed)")
        return f"Register was up to date; the last registration: {verdict}."
    return "Register did not run."


def render_summary(ws: Workspace, config: Config, facts: RunFacts,
                   registration: Any = None) -> str:
    """The run's markdown page; ``registration`` is the register stage's result when it ran
    (a stage's type: this module sits below the stages)."""
    skipped = ", ".join(facts.skipped) or "none"
    lines = [f"# medimg pipeline run `{cell(facts.name)}`", "",
             f"Workspace `{cell(ws.root.name)}`. Ran: {', '.join(facts.ran) or 'none'}. "
             f"Up to date, skipped: {skipped}.", ""]
    if facts.mlflow_link:
        lines += [f"MLflow run: {facts.mlflow_link}", ""]
    if facts.experiment:
        lines += [f"DVC experiment: `{facts.experiment}` (`dvc exp show`, "
                  f"`dvc exp apply {facts.experiment}`)", ""]
    lines += ["## Decision", "", _decision(ws, registration, facts), "", "## Data", ""]
    if facts.ingest:
        lines += [f"Ingest: {facts.ingest}.", ""]
    lines += _data_section(ws, config)
    if ws.metrics_path.is_file():
        metrics = json.loads(ws.metrics_path.read_text())
        fresh = "evaluate" in facts.ran
        lines += ["", "## Test metrics" + ("" if fresh else " (from the last evaluation)"), ""]
        lines += _metrics_section(metrics)
        lines += ["", "## Gates", "", *_gate_section(metrics, config)]
    return "\n".join(lines) + "\n"
