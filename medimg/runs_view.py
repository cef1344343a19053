"""`medimg runs` and `medimg compare` as terminal tables (rich), from medimg.registry.runs."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Column, Table

from medimg.metric_table import BY_NAME, HEADLINE_METRICS
from medimg.registry.runs import Estimate, RecentRuns, RunComparison, RunSummary

# the few headline metrics a row of `medimg runs` has room for; `medimg compare` shows them all
RUN_METRICS = ("f1", "recall", "roc_auc")
STATUS_STYLE = {"FINISHED": "green", "FAILED": "red", "KILLED": "red", "RUNNING": "yellow"}


def _status(run: RunSummary) -> str:
    style = STATUS_STYLE.get(run.status, "")
    shown = f"[{style}]{run.status}[/]" if style else run.status
    return shown + (f"\nat {escape(run.failed_stage)}" if run.failed_stage else "")


def _gate(run: RunSummary) -> str:
    return {True: "[green]passed[/]", False: "[red]failed[/]", None: "—"}[run.gate_passed]


def _estimate(value: Estimate | None,
              interval: str = "{value:.3f}\n[dim]{low:.3f}-{high:.3f}[/]") -> str:
    """The value with its interval: by default over it, for a narrow column."""
    if value is None or value.value is None:
        return "—"
    if value.low is None or value.high is None:
        return f"{value.value:.3f}"
    return interval.format(value=value.value, low=value.low, high=value.high)


# below this many columns the table would wrap every cell: each run is a short block instead
TABLE_WIDTH = 120
INLINE = "{value:.3f} ({low:.3f}-{high:.3f})"  # an estimate on one line


def runs_blocks(recent: RecentRuns) -> list[str]:
    """The runs, newest first, as a few lines each: for a narrow terminal or a pipe."""
    shown = [f"The last {len(recent.runs)} run(s) of experiment {escape(recent.experiment)!r}, "
             "newest first; test metrics with their bootstrap interval"]
    for run in recent.runs:
        status = _status(run).replace("\n", " ")
        lines = [f"[bold]{escape(run.name)}[/] ({run.short_id})  {status}  {run.started} UTC, "
                 f"took {run.duration}",
                 f"  data {escape(run.data)} · gate {_gate(run)} · registered "
                 f"{escape(run.registered)}",
                 "  " + " · ".join(f"{m} {_estimate(run.metrics.get(m), INLINE)}"
                                   for m in RUN_METRICS)]
        if recent.varying:
            lines.append("  " + " · ".join(f"{escape(k)} {escape(run.params.get(k, '—'))}"
                                           for k in recent.varying))
        if run.failure:
            lines.append(f"  [red]failed at {escape(run.failed_stage or '?')}:[/] "
                         f"{escape(run.failure)}")
        shown.append("\n".join(lines))
    return shown


def runs_table(recent: RecentRuns, width: int = TABLE_WIDTH) -> list[Table | str]:
    """The runs, newest first, then a line for each failed run's reason; a block per run
    instead of the table when the terminal is narrower than :data:`TABLE_WIDTH`."""
    if not recent.runs:
        return [f"no runs in experiment {escape(recent.experiment)!r} yet; `medimg run` makes "
                "one"]
    if width < TABLE_WIDTH:
        return list(runs_blocks(recent))
    table = Table("run", "started (UTC)", "status", "took", "data",
                  *(escape(k) for k in recent.varying), *RUN_METRICS, "gate", "registered",
                  title=f"The last {len(recent.runs)} run(s) of experiment "
                        f"{escape(recent.experiment)!r}, newest first",
                  caption="params: only those that differ among these runs; test metrics "
                          "with their bootstrap interval")
    for run in recent.runs:
        table.add_row(f"{escape(run.name)}\n[dim]{run.short_id}[/]", run.started, _status(run),
                      run.duration, escape(run.data),
                      *(escape(run.params.get(k, "—")) for k in recent.varying),
                      *(_estimate(run.metrics.get(m)) for m in RUN_METRICS),
                      _gate(run), escape(run.registered))
    notes: list[Table | str] = [table]
    notes += [f"[red]{escape(run.name)}[/] failed at {escape(run.failed_stage or '?')}: "
              f"{escape(run.failure)}" for run in recent.runs if run.failure]
    return notes


def comparison_tables(compared: RunComparison) -> list[Table | str]:
    """The two runs, their differing params and their metrics side by side, with B - A."""
    a, b = compared.a, compared.b
    runs = Table("", Column("A", overflow="fold"), Column("B", overflow="fold"), title="Runs")
    for label, pick in (("run", lambda r: escape(r.name)), ("id", lambda r: r.run_id),
                        ("status", _status), ("started (UTC)", lambda r: r.started),
                        ("took", lambda r: r.duration), ("data", lambda r: escape(r.data)),
                        ("test split", lambda r: escape(r.test_split[:8] or "—")),
                        ("gate", _gate), ("registered", lambda r: escape(r.registered))):
        runs.add_row(label, pick(a), pick(b))
    shown: list[Table | str] = [runs]
    if compared.differing:
        params = Table("param", "A", "B", title="Params that differ",
                       caption=f"{compared.equal_params} other param(s) equal")
        for pair in compared.differing:
            params.add_row(escape(pair.key), escape(pair.a or "—"), f"[bold yellow]"
                           f"{escape(pair.b or '—')}[/]")
        shown.append(params)
    else:
        shown.append(f"all {compared.equal_params} params equal")
    paired = bool(compared.differences)
    lower = [m for m in HEADLINE_METRICS if not BY_NAME[m].higher_is_better]
    metrics = Table("metric", "A", "B", *(["B - A (paired)"] if paired else []),
                    title="Test metrics with their intervals",
                    caption=f"lower is better for {', '.join(lower)}" if lower else None)
    for name in HEADLINE_METRICS:
        if name in a.metrics or name in b.metrics:
            difference = compared.differences.get(name)
            metrics.add_row(name, a.metrics.get(name, Estimate(None)).text(),
                            b.metrics.get(name, Estimate(None)).text(),
                            *([difference.text(signed=True) if difference else "—"]
                              if paired else []))
    shown.append(metrics)
    shown.append(f"B - A paired on {compared.paired_on}" if paired else compared.unpaired)
    return shown
