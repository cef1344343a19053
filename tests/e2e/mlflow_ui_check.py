"""Open the newest MLflow run of a workspace in the MLflow UI, in headless Chromium, and check that
the page draws what the REST API holds.

After ``make demo``, from the repository root::

    .venv/bin/python tests/e2e/mlflow_ui_check.py --workspace . --out /tmp/mlflow-ui

It starts ``mlflow server`` on the workspace's ``mlflow.db`` (a free loopback port, telemetry
off; or uses ``--url`` of one already running, e.g. ``make mlflow-ui``'s), picks the newest run
(or ``--run-id``), and checks, through the REST API and the page alike:

- each per-epoch metric (loss, val_loss, val_auc, learning_rate, images_per_second) has more
  than one step and the Model metrics tab draws it as a line over "Step", a marker a step;
- the run's dataset inputs are train, val and test, and the Datasets drawer lists each one
  with its digest and the image count of its profile;
- the logged model's page shows its test_roc_auc, scored on the test split;
- no request of the page leaves the machine, and the page throws no error.

It prints what it found and the screenshots it took (overview, datasets drawer, model metrics,
the val_loss chart, the logged model) and exits 0 when every check passes, 1 when one fails,
2 when it cannot check (no store, no run, no Chromium). It is not a pytest test (no ``test_``
prefix); ``tests/integration/test_mlflow_ui_browser.py`` runs the same checks on a fresh run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for support.*


def main(argv: list[str] | None = None) -> int:
    from support.browser import headless_chromium, missing_browser
    from support.mlflow_ui import failures, look_at_run, newest_run, read_run, served_mlflow_ui

    from medimg.errors import WorkspaceError
    from medimg.workspace import open_workspace

    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument(
        "--workspace",
        type=Path,
        default=Path("."),
        help="the workspace whose mlflow.db to open (default: .)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(tempfile.gettempdir()) / "mlflow-ui",
        help="where the screenshots go (default: <tmp>/mlflow-ui)",
    )
    parser.add_argument("--run-id", help="the run to open (default: the newest)")
    parser.add_argument(
        "--url", help="an MLflow server already serving the workspace's store (default: start one)"
    )
    args = parser.parse_args(argv)

    reason = missing_browser()
    if reason is not None:
        print(f"cannot check: {reason}")
        return 2
    try:
        ws = open_workspace(args.workspace)
    except WorkspaceError as error:
        print(f"cannot check: {error}")
        return 2
    if args.url is None and not ws.mlflow_db.is_file():
        print(f"cannot check: no {ws.mlflow_db}; run `make demo` first")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    server = (
        nullcontext(args.url.rstrip("/"))
        if args.url
        else served_mlflow_ui(ws.mlflow_db, ws.mlflow_artifacts, args.out / "mlflow-server.log")
    )
    with server as url:
        found = newest_run(url) if args.run_id is None else (None, args.run_id)
        if found is None:
            print(f"cannot check: the store at {url} has no runs; run `make demo` first")
            return 2
        run = read_run(url, found[1])
        with headless_chromium() as browser:
            view = look_at_run(browser, url, run, args.out)

    print(f"run {run.name} ({run.run_id}), {run.status}, experiment {run.experiment_id}")
    print(f"  page: {url}/#/experiments/{run.experiment_id}/runs/{run.run_id}")
    for key, steps in run.steps.items():
        curve = view.curves.get(key)
        drawn = (
            f"a line of {curve.vertices} vertices, {curve.markers} markers"
            if curve
            else "no chart looked at"
        )
        print(
            f"  {key}: steps {steps[0]}..{steps[-1]} ({len(steps)}); {drawn}"
            if steps
            else f"  {key}: no steps"
        )
    for dataset in run.datasets:
        print(
            f"  dataset {dataset.name} ({dataset.digest}), source {dataset.source_type}, "
            f"{dataset.images} images; the drawer shows {view.images_shown.get(dataset.name)}"
        )
    print(f"  logged model {run.model_id}: {view.model_row or 'no metric row seen'}")
    print(f"  requests beyond this machine: {len(view.left_loopback)}")
    for shot in view.screenshots:
        print(f"  screenshot {shot}")
    problems = failures(run, view)
    for problem in problems:
        print(f"FAILED: {problem}")
    print("all checks passed" if not problems else f"{len(problems)} check(s) failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
