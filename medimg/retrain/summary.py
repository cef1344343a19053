"""A retrain in one markdown page: what changed, drift, the challenger against the champion, and
the decision with its reason. The Prefect artifact (stable key per workspace) and the MLflow run
(``retrain/summary.md``) hold the same page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medimg.drift.results import DriftReport
from medimg.retrain.assess import Assessment
from medimg.retrain.changes import LabelChanges
from medimg.run_summary import cell


@dataclass(frozen=True)
class RetrainFacts:
    """What the retrain flow knows when it writes the page."""

    name: str
    decision: str  # one line: what happened and why
    data_before: str = ""  # the champion's data version
    data_after: str = ""  # the data version the challenger was trained on
    mlflow_link: str = ""
    pipeline_run: str = ""


def _changes_section(changes: LabelChanges) -> list[str]:
    lines = [f"{cell(changes.line())}.", ""]
    by_class = changes.by_class()
    classes = sorted(set(by_class["new"]) | set(by_class["corrected"]))
    if classes:
        lines += ["| class | new images | corrected to |", "|---|---|---|"]
        lines += [f"| {cell(c)} | {by_class['new'].get(c, 0)} | "
                  f"{by_class['corrected'].get(c, 0)} |" for c in classes]
        lines.append("")
    sources = changes.by_source()
    if sources:
        lines += ["| label source | labels |", "|---|---|"]
        lines += [f"| {cell(s)} | {n} |" for s, n in sources.items()]
    return lines


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _drift_section(drift: DriftReport | None) -> list[str]:
    if drift is None:
        return ["Not measured: no champion, or its training data is not in the DVC cache."]
    head = (f"Drifted: **{', '.join(drift.drifted)}**." if drift.drifted else "No drift.")
    if not drift.enough_data:
        head += f" Features with fewer than {drift.config.min_samples} images are not judged."
    lines = [head, "", "| feature | PSI | statistic | p-value | incoming | verdict |",
             "|---|---|---|---|---|---|"]
    for f in drift.features:
        lines.append(f"| {cell(f.name)} | {_number(f.psi)} | {_number(f.statistic)} | "
                     f"{_number(f.p_value)} | {f.n_incoming} | {f.verdict} |")
    return lines


def _versus_section(registration: Any) -> list[str]:
    if registration is None:
        return ["No challenger was registered in this retrain."]
    if not registration.registered:
        return ["The challenger failed the gates: "
                + "; ".join(cell(c.reason) for c in registration.gates.failed) + "."]
    comparison = registration.comparison
    if comparison is None:
        return [f"Challenger v{registration.version}; there was no champion to compare with."]
    if comparison.reason:
        return [f"Challenger v{registration.version} against champion "
                f"v{comparison.champion_version}: {cell(comparison.reason)}."]
    lines = [f"Challenger v{registration.version} against champion "
             f"v{comparison.champion_version}, on the same test split:", "",
             "| metric | challenger | champion | difference (interval) |", "|---|---|---|---|"]
    for metric, diff in comparison.differences.items():
        low, high = diff.get("low"), diff.get("high")
        interval = (f"{diff['difference']:+.3f} ({low:+.3f} to {high:+.3f})"
                    if None not in (diff.get("difference"), low, high) else "-")
        lines.append(f"| {cell(metric)} | {_number(diff.get('challenger'))} | "
                     f"{_number(diff.get('champion'))} | {interval} |")
    lines += ["", "| champion check | result |", "|---|---|"]
    lines += [f"| {cell(c.name)} | {'pass' if c.passed else '**fail**'}: {cell(c.reason)} |"
              for c in comparison.gates.checks]
    return lines


def render_retrain(facts: RetrainFacts, assessment: Assessment, changes: LabelChanges,
                   drift: DriftReport | None, registration: Any = None) -> str:
    """The retrain's markdown page. ``changes`` and ``drift`` are measured after ingest when
    the retrain ran (``assessment`` holds what it decided on); ``registration`` is the register
    stage's result when it ran."""
    champion = assessment.champion
    lines = [f"# medimg retrain `{cell(facts.name)}`", "", "## Decision", "",
             f"**{cell(facts.decision)}**", "",
             f"Triggers: {cell(assessment.why)}.", ""]
    lines.append(f"Champion before: v{champion.version}, data {champion.data_version[:12]}."
                 if champion else "Champion before: none.")
    if facts.data_after:
        lines.append(f"Data version trained on: {facts.data_after[:12]}.")
    if facts.mlflow_link:
        lines += ["", f"MLflow run: {facts.mlflow_link}"]
    if facts.pipeline_run:
        lines += ["", f"Pipeline run: `{cell(facts.pipeline_run)}`"]
    lines += ["", "## What changed", "", *_changes_section(changes), "",
              "## Drift", "", *_drift_section(drift), "",
              "## Challenger against champion", "", *_versus_section(registration)]
    return "\n".join(lines) + "\n"
