"""The MLflow UI on one run, in headless Chromium against a real ``mlflow server``, and the same
facts read from the server's REST API, so a check can say the page draws what the store holds.

:func:`served_mlflow_ui` starts the server on a workspace's store; :func:`read_run` asks the REST
API about a run (its per-epoch metric steps, dataset inputs, logged model and that model's
metrics); :func:`look_at_run` opens the run's page, its datasets drawer, its model-metrics
charts and its logged model's page, keeps what they show and screenshots of each;
:func:`failures` compares the two. The integration test and ``tests/e2e/mlflow_ui_check.py``
share them.
"""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.browser import LoopbackOnly
from support.servers import free_port, running_server

EPOCH_METRICS = ("loss", "val_loss", "val_auc", "learning_rate", "images_per_second")
"""What the training loop logs once an epoch: the curves the Model metrics tab draws."""

MODEL_METRIC = "test_roc_auc"
"""The logged model's metric the model page must show, scored on the test split."""

SPLITS = ("train", "val", "test")

UI_SETTINGS = {
    # the "Model training" side of the UI (runs, models), not the GenAI one
    "mlflow.workflowType_v1": '"machine_learning"',
    # the assistant panel opens itself on a first visit and would cover half the page
    "mlflow.assistant.panelOpen_v1": "false",
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
}
"""What a returning user's browser remembers, set before the page loads."""

VIEWPORT = {"width": 1600, "height": 2200}  # the page scrolls inside itself: a tall window
DATASET_ENTRY = re.compile(r"^(\S+) \(#?([0-9a-f]+)\)$")  # "train (3ec9d42c512f336e)"


@contextmanager
def served_mlflow_ui(db: Path, artifacts: Path, log: Path) -> Iterator[str]:
    """``mlflow server`` on the SQLite store ``db`` on a free loopback port, with telemetry off;
    yields its base URL once ``/health`` answers, and stops it on exit."""
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(
        {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
            # no background jobs (online scoring, trace archival): a viewer needs none, and
            # their start-up raced the page's first requests on a busy machine
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
    )
    port = free_port()
    argv = [
        str(bin_dir / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{db}",
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    base = f"http://127.0.0.1:{port}"
    with running_server(argv, f"{base}/health", env, log, timeout=180):
        _warm_up(base)
        yield base


def _warm_up(base: str) -> None:
    """One request of each kind the run page makes, one at a time, before the browser makes
    them all at once: MLflow 3.17's server sets up its database mappers on first use, and two
    first uses at once can fail with a 500 ("SqlUserRoleAssignment is not defined")."""
    for path, query in (("experiments/search", {"max_results": "1"}),
                        ("registered-models/search", {"max_results": "1"}),
                        ("model-versions/search", {"max_results": "1"})):
        try:
            _rest(base, path, **query)
        except urllib.error.HTTPError:
            continue  # answered: whatever it set up is set up


def _rest(base: str, path: str, body: dict[str, Any] | None = None, **query: str) -> Any:
    url = f"{base}/api/2.0/mlflow/{path}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


@dataclass(frozen=True)
class DatasetInput:
    """A dataset input of the run as the REST API gives it."""

    name: str
    digest: str
    source_type: str
    images: int | None  # from the profile medimg logs; None without one


@dataclass(frozen=True)
class ModelMetric:
    value: float
    dataset_name: str | None
    dataset_digest: str | None


@dataclass
class RunRecord:
    """What the REST API says of one run."""

    experiment_id: str
    run_id: str
    name: str
    status: str
    steps: dict[str, list[int]]  # each of EPOCH_METRICS the run has -> its steps
    datasets: list[DatasetInput]
    model_id: str | None  # the run's logged model (the newest, when it logged several)
    model_name: str | None
    model_metrics: dict[str, ModelMetric]

    @property
    def curves(self) -> list[str]:
        """The per-epoch metrics with more than one step: the page draws each as a line."""
        return [key for key, steps in self.steps.items() if len(steps) > 1]


def newest_run(base: str) -> tuple[str, str] | None:
    """(experiment id, run id) of the newest run in any experiment; None in an empty store."""
    experiments = _rest(base, "experiments/search", {"max_results": 1000}).get("experiments", [])
    if not experiments:
        return None
    runs = _rest(
        base,
        "runs/search",
        {
            "experiment_ids": [e["experiment_id"] for e in experiments],
            "max_results": 1,
            "order_by": ["attributes.start_time DESC"],
        },
    ).get("runs", [])
    return (runs[0]["info"]["experiment_id"], runs[0]["info"]["run_id"]) if runs else None


def read_run(base: str, run_id: str) -> RunRecord:
    """The run, its per-epoch metric histories, its dataset inputs and its logged model, through
    ``runs/get``, ``metrics/get-history`` and ``logged-models/search``."""
    run = _rest(base, "runs/get", run_id=run_id)["run"]
    info = run["info"]
    logged = {m["key"] for m in run["data"].get("metrics", [])}
    steps = {}
    for key in EPOCH_METRICS:
        if key in logged:
            history = _rest(base, "metrics/get-history", run_id=run_id, metric_key=key)
            steps[key] = sorted(m["step"] for m in history.get("metrics", []))
    datasets = []
    for given in run.get("inputs", {}).get("dataset_inputs", []):
        dataset = given["dataset"]
        profile = json.loads(dataset.get("profile") or "{}")
        datasets.append(
            DatasetInput(
                dataset["name"],
                dataset["digest"],
                dataset.get("source_type", ""),
                profile.get("images"),
            )
        )
    models = [
        m
        for m in _rest(
            base,
            "logged-models/search",
            {"experiment_ids": [info["experiment_id"]], "max_results": 100},
        ).get("models", [])
        if m["info"].get("source_run_id") == run_id
    ]
    model = max(models, key=lambda m: m["info"]["creation_timestamp_ms"], default=None)
    metrics = {
        m["key"]: ModelMetric(m["value"], m.get("dataset_name"), m.get("dataset_digest"))
        for m in (model["data"].get("metrics", []) if model else [])
    }
    return RunRecord(
        experiment_id=info["experiment_id"],
        run_id=run_id,
        name=info.get("run_name", ""),
        status=info["status"],
        steps=steps,
        datasets=datasets,
        model_id=model["info"]["model_id"] if model else None,
        model_name=model["info"]["name"] if model else None,
        model_metrics=metrics,
    )


@dataclass(frozen=True)
class Curve:
    """One chart of the Model metrics tab."""

    vertices: int  # of the drawn line; a single value is drawn as a bar, with none
    markers: int  # one a step
    legend: bool  # "<run> (<metric>)", the legend a line chart has
    step_axis: bool  # an x axis titled "Step"


@dataclass
class PageView:
    """What the MLflow UI showed of the run, and the screenshots taken."""

    name_shown: bool = False
    metric_names: set[str] = field(default_factory=set)  # EPOCH_METRICS in the metrics table
    datasets_listed: list[str] = field(default_factory=list)  # "train (3ec9d42c512f336e)"
    images_shown: dict[str, int] = field(default_factory=dict)  # each dataset's profile
    curves: dict[str, Curve] = field(default_factory=dict)
    model_row: str = ""  # the logged model page's row for MODEL_METRIC
    screenshots: list[Path] = field(default_factory=list)
    left_loopback: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)


def look_at_run(browser: Any, base: str, run: RunRecord, out: Path) -> PageView:
    """Open ``run`` in the MLflow UI at ``base`` as a user would, with every request held to
    this machine, and keep what its pages show; screenshots go to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    view = PageView()
    guard = LoopbackOnly()
    context = browser.new_context(viewport=VIEWPORT)
    context.add_init_script(
        "".join(
            f"localStorage.setItem({json.dumps(k)}, {json.dumps(v)});"
            for k, v in UI_SETTINGS.items()
        )
    )
    context.route("**/*", guard)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.on("pageerror", lambda error: view.page_errors.append(str(error)))
    run_page = f"{base}/#/experiments/{run.experiment_id}/runs/{run.run_id}"
    try:
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        page.goto(run_page)
        title = page.get_by_role("heading", name=run.name, exact=True)
        try:
            title.wait_for()
        except PlaywrightTimeout:  # a first load that lost a request: once more, as a user would
            page.reload()
            title.wait_for()
        view.name_shown = title.is_visible()
        page.get_by_text("Metrics (", exact=False).first.wait_for()
        view.metric_names = {
            k for k in EPOCH_METRICS if page.get_by_text(k, exact=True).count() > 0
        }
        view.screenshots.append(_shoot(page, out / "overview.png"))
        _look_at_datasets(page, view, out)
        _look_at_curves(page, run_page, run, view, out)
        if run.model_id is not None:
            _look_at_model(page, base, run, view, out)
    finally:
        context.close()
        view.left_loopback = guard.left
    return view


def _shoot(page: Any, path: Path) -> Path:
    page.screenshot(path=str(path), full_page=True)
    return path


def _look_at_datasets(page: Any, view: PageView, out: Path) -> None:
    """The "Datasets" cell lists the first input; clicking it opens the drawer that lists them
    all; clicking one there shows its profile and digest."""
    cell = page.get_by_role("heading", name="Datasets", exact=True).locator("xpath=..")
    if cell.count() == 0 or cell.get_by_role("button").count() == 0:
        return
    cell.get_by_role("button").first.click()
    drawer = page.get_by_role("dialog").filter(has_text="datasets used")
    drawer.wait_for()
    lines = [line.strip() for line in drawer.inner_text().splitlines()]
    view.datasets_listed = list(dict.fromkeys(x for x in lines if DATASET_ENTRY.match(x)))
    for entry in view.datasets_listed:
        name, digest = DATASET_ENTRY.match(entry).groups()
        drawer.get_by_text(entry, exact=True).first.click()
        drawer.get_by_text(digest, exact=True).wait_for()  # the pane now shows this one
        shown = re.search(r"^images: (\d+)$", drawer.inner_text(), re.MULTILINE)
        if shown:
            view.images_shown[name] = int(shown.group(1))
    view.screenshots.append(_shoot(page, out / "datasets.png"))
    page.keyboard.press("Escape")


def _look_at_curves(page: Any, run_page: str, run: RunRecord, view: PageView, out: Path) -> None:
    """The Model metrics tab draws a metric with several steps as a line over "Step"; each is
    found through the tab's search box, which keeps only the charts whose name matches."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.goto(f"{run_page}/model-metrics")
    search = page.get_by_placeholder("Search metric charts")
    search.wait_for()
    page.locator(".js-plotly-plot").first.wait_for()
    view.screenshots.append(_shoot(page, out / "model-metrics.png"))
    for key in run.curves:
        search.fill(key)
        card = page.locator(
            f"xpath=//*[normalize-space(text())='{key}']"
            "/ancestor::*[.//*[contains(@class,'js-plotly-plot')]][1]"
        )
        card.locator(".js-plotly-plot").first.wait_for()
        legend = card.get_by_text(f"{run.name} ({key})", exact=True)
        # plotly draws the trace and its legend a moment after the chart's frame; a bar chart,
        # what a single value gets, has neither
        with suppress(PlaywrightTimeout):
            card.locator(".scatterlayer .js-line").first.wait_for(timeout=15_000)
            legend.first.wait_for(timeout=15_000)
        line = card.locator(".scatterlayer .js-line")
        path = line.first.get_attribute("d") if line.count() else ""
        view.curves[key] = Curve(
            vertices=len(re.findall(r"[ML]", path or "")),
            markers=card.locator(".scatterlayer .points path").count(),
            legend=legend.count() > 0,
            step_axis=card.get_by_text("Step", exact=True).count() > 0,
        )
        if key == "val_loss":
            view.screenshots.append(_shoot(page, out / "val_loss.png"))
    search.fill("")


def _look_at_model(page: Any, base: str, run: RunRecord, view: PageView, out: Path) -> None:
    """The logged model's page lists its metrics, each with the dataset it was scored on."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.goto(f"{base}/#/experiments/{run.experiment_id}/models/{run.model_id}")
    page.get_by_role("heading", name=run.model_name, exact=True).wait_for()
    page.get_by_placeholder("Search metrics").fill(MODEL_METRIC)
    row = page.get_by_role("row").filter(has=page.get_by_text(MODEL_METRIC, exact=True))
    with suppress(PlaywrightTimeout):
        row.first.wait_for(timeout=15_000)
        view.model_row = " | ".join(row.first.inner_text().split("\n"))
    view.screenshots.append(_shoot(page, out / "logged-model.png"))


def failures(run: RunRecord, view: PageView) -> list[str]:
    """Each way the page and the REST API disagree, or either lacks what a demo run has."""
    found = []
    if not view.name_shown:
        found.append(f"the run page does not show the run's name {run.name!r}")
    if len(run.steps.get("val_loss", [])) < 2:
        found.append(
            f"val_loss has steps {run.steps.get('val_loss', [])} in the REST API; "
            "a curve needs more than one"
        )
    names = {d.name for d in run.datasets}
    if not set(SPLITS) <= names:
        found.append(f"the run's dataset inputs are {sorted(names)}, not {list(SPLITS)}")
    for dataset in run.datasets:
        entry = f"{dataset.name} ({dataset.digest})"
        if entry not in view.datasets_listed:
            found.append(f"the datasets drawer lists {view.datasets_listed}, not {entry!r}")
        elif dataset.images is not None and view.images_shown.get(dataset.name) != dataset.images:
            found.append(
                f"the drawer shows images {view.images_shown.get(dataset.name)} for "
                f"{dataset.name}; its profile says {dataset.images}"
            )
    missing = set(run.steps) - view.metric_names
    if missing:
        found.append(f"the run page's metrics table does not name {sorted(missing)}")
    for key in run.curves:
        curve, steps = view.curves.get(key), run.steps[key]
        if curve is None or curve.vertices < 2 or not curve.step_axis or not curve.legend:
            found.append(
                f"{key} has {len(steps)} steps but its chart is not a line over Step: {curve}"
            )
        elif curve.markers and curve.markers != len(steps):
            found.append(f"{key}'s chart marks {curve.markers} points; it has {len(steps)} steps")
    metric = run.model_metrics.get(MODEL_METRIC)
    if metric is None:
        found.append(f"the run's logged model {run.model_id} has no {MODEL_METRIC}")
    else:
        cell = f"{metric.dataset_name} (#{metric.dataset_digest})"
        if metric.dataset_name != "test":
            found.append(f"{MODEL_METRIC} was scored on {metric.dataset_name}, not test")
        if cell not in view.model_row or not _shows_number(view.model_row, metric.value):
            found.append(
                f"the logged model page's {MODEL_METRIC} row reads "
                f"{view.model_row!r}; expected {cell} and {metric.value}"
            )
    for shot in view.screenshots:
        if not shot.is_file() or not shot.read_bytes().startswith(b"\x89PNG"):
            found.append(f"screenshot {shot} is not a PNG")
    if view.left_loopback:
        found.append(f"the page asked beyond this machine for {view.left_loopback}")
    if view.page_errors:
        found.append(f"the page threw {view.page_errors}")
    return found


def _shows_number(text: str, value: float) -> bool:
    numbers = re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", text)
    return any(abs(float(n) - value) <= 1e-9 * max(1.0, abs(value)) for n in numbers)
