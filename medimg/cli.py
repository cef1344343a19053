"""The `medimg` command line. Every command takes --workspace (default: the current directory)."""

from __future__ import annotations

import functools
import logging
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medimg.console import ProgressDisplay, QuietTerminal, log_file
from medimg.errors import MedimgError

app = typer.Typer(
    name="medimg",
    help="MLOps pipeline for medical image classification.\n\n"
         "The terminal shows medimg's progress and results; what the libraries print "
         "(TensorFlow, Prefect, MLflow, DVC) goes to reports/logs/<command>.log in the "
         "workspace. `medimg --verbose COMMAND` shows it all instead.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

WorkspaceOpt = Annotated[
    Path | None,
    typer.Option("--workspace", "-w", help="Workspace directory (default: current directory).",
                 envvar="MEDIMG_WORKSPACE", show_default=False),
]
F = TypeVar("F", bound=Callable[..., Any])


VERBOSE_HELP = ("Show everything the libraries print, as they print it, instead of writing it "
                "to reports/logs/<command>.log; give it before the command: "
                "`medimg --verbose run`.")
# this command's, in this process; settings are read at the command's first need, once
_state: dict[str, Any] = {"verbose": False, "quiet": None, "settings": None}


@app.callback()
def _global_options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help=VERBOSE_HELP)] = False,
) -> None:
    """Options for every command, given before it: ``medimg --verbose run``."""
    _state["verbose"] = verbose


def _setup_logging(quiet: QuietTerminal | None) -> None:
    """Entry-point logging; never done at import time. Quiet, the log file has a root handler
    for the command (medimg.console); --verbose, stderr has one, as ever."""
    if quiet is None:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("medimg").setLevel(logging.INFO)


def _command_name(command: Callable[..., Any]) -> str:
    """``train``, ``registry-list``...: the command as typed, for its log file's name."""
    import click

    context = click.get_current_context(silent=True)
    words = context.command_path.split()[1:] if context is not None else []
    return "-".join(words) or command.__name__.replace("_", "-")


@contextmanager
def _terminal(name: str, kwargs: dict[str, Any]) -> Iterator[QuietTerminal | None]:
    """Quiet mode (the default): library output into the command's log file; --verbose: as is."""
    if _state["verbose"]:
        yield None
        return
    where = kwargs.get("workspace")
    with ExitStack() as stack:
        try:
            quiet = stack.enter_context(QuietTerminal(
                log_file(name, where if isinstance(where, Path) else None), console, err))
        except OSError:  # no log file to be had (read-only workspace, closed descriptors)
            quiet = None
        _state["quiet"] = quiet
        try:
            yield quiet
        finally:
            _state["quiet"] = None


def _progress() -> ProgressDisplay:
    """The progress rows of this command: on a terminal, and not under --verbose (where the
    libraries' own lines would tear them)."""
    return ProgressDisplay(err, enabled=not _state["verbose"])


def _point_to_log(quiet: QuietTerminal | None) -> None:
    """After a failure: where the libraries' output went, when there was any. On stdout, so
    that stderr holds the one error line."""
    if quiet is not None and quiet.has_output():
        console.print(f"[dim](library output of this command: {escape(str(quiet.log))}; "
                      "`medimg --verbose ...` shows it here)[/]", highlight=False,
                      soft_wrap=True)


def _settings():
    """The environment, read once per command (medimg.settings)."""
    from medimg.settings import read_settings

    if _state["settings"] is None:
        _state["settings"] = read_settings()
    return _state["settings"]


def _connection_problem(exc: BaseException) -> str | None:
    text = f"{type(exc).__name__}: {exc}"
    markers = ("ConnectError", "ConnectionError", "Connection refused", "Max retries exceeded",
               "Failed to establish a new connection", "Name or service not known")
    if not any(m in text for m in markers):
        return None
    servers = _settings().servers()
    named = ", ".join(f"{k}={v}" for k, v in servers.items()) or "no server configured"
    return (f"lost the connection to a server mid-run ({named}): {text.splitlines()[0]}; "
            "check that it is up, or unset the variable to use the embedded defaults")


def _friendly(command: F) -> F:
    """Turn a user-fixable failure into one line on stderr and exit code 1, no traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _state["settings"] = None  # each command reads the environment afresh, once
        with _terminal(_command_name(command), kwargs) as quiet:
            _setup_logging(quiet)
            try:
                return command(*args, **kwargs)
            except MedimgError as exc:
                err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True,
                          highlight=False)
                _point_to_log(quiet)
                raise typer.Exit(1) from None
            except (typer.Exit, typer.Abort, KeyboardInterrupt):
                raise
            except Exception as exc:
                problem = _connection_problem(exc)
                if problem is None:
                    # the traceback shows on the terminal once this block has restored it;
                    # the log gets a copy, after what the libraries said before it
                    if quiet is not None:
                        traceback.print_exception(exc)
                    _point_to_log(quiet)
                    raise
                err.print(f"[bold red]error:[/] {problem}", soft_wrap=True, highlight=False)
                _point_to_log(quiet)
                raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _workspace(directory: Path | None):
    from medimg.workspace import open_workspace

    ws = open_workspace(directory)
    _ = ws.config  # a bad params.yaml fails here, before any work
    return ws


@app.command()
@_friendly
def init(
    directory: Annotated[Path, typer.Argument(help="Directory to make into a workspace.")],
    force: Annotated[bool, typer.Option(help="Overwrite an existing params.yaml.")] = False,
) -> None:
    """Create a workspace: git init, dvc init, params.yaml and dvc.yaml."""
    from medimg.workspace import init_workspace

    ws = init_workspace(directory, force=force)
    console.print(f"workspace ready at {ws.root}; put images in {ws.relative(ws.raw_dir)}/<class>/"
                  " and run `medimg run`", highlight=False)


@app.command()
@_friendly
def synth(
    out: Annotated[Path, typer.Argument(help="Output folder (class folders + patients.csv).")],
    n_images: Annotated[int, typer.Option("--n-images", "-n", help="Number of images.")] = 800,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = 128,
    positive_fraction: Annotated[float, typer.Option(help="Share of pneumonia images.")] = 0.5,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same bytes.")] = 0,
    image_format: Annotated[str, typer.Option("--format", help="png or dicom.")] = "png",
) -> None:
    """Write a synthetic chest-radiograph phantom data set."""
    from medimg.data.phantoms import generate_phantoms

    if image_format not in ("png", "dicom"):
        raise MedimgError(f"--format {image_format!r} is not supported; use png or dicom")
    try:
        summary = generate_phantoms(out, n_images=n_images, image_size=size,
                                    positive_fraction=positive_fraction, seed=seed,
                                    image_format=image_format)
    except ValueError as exc:
        raise MedimgError(str(exc)) from None
    counts = ", ".join(f"{k} {v}" for k, v in summary.counts.items())
    console.print(f"wrote {summary.n_images} phantoms ({counts}) of {summary.n_patients} "
                  f"patients to {summary.out_dir}", highlight=False)


@app.command()
@_friendly
def ingest(
    sources: Annotated[list[Path], typer.Argument(
        help="Folders of class folders (optionally inside train/val/test folders), label lists "
             "(.csv/.tsv), MedMNIST-style .npz files, DICOM files or trees.")],
    workspace: WorkspaceOpt = None,
    source_format: Annotated[str, typer.Option(
        "--format", help="auto, folder, csv, npz or dicom (auto detects each source).")] = "auto",
    labels: Annotated[Path | None, typer.Option(
        help="Label list for a DICOM tree: columns path or sop_instance_uid, and label.")] = None,
    class_names: Annotated[str | None, typer.Option(
        help="Comma-separated class names for .npz label indices (default base.class_names).")
    ] = None,
    labelled_by: Annotated[str, typer.Option(
        help="Who labelled these images, kept as label provenance.")] = "source",
    dedupe: Annotated[bool | None, typer.Option(
        "--dedupe/--no-dedupe",
        help="Drop the train/val copy of each cross-split duplicate, keeping the test copy "
             "(default: data.dedupe_across_splits).", show_default=False)] = None,
) -> None:
    """Add images to the manifest; de-identify DICOM; quarantine files that cannot be used."""
    from medimg.data.quarantine import count_codes
    from medimg.data.stage import run_ingest

    if source_format not in ("auto", "folder", "csv", "npz", "dicom"):
        raise MedimgError(f"--format {source_format!r} is not one of auto, folder, csv, npz, dicom")
    ws = _workspace(workspace)
    names = [n.strip() for n in class_names.split(",")] if class_names else None
    with _progress() as shown:
        summary = run_ingest(
            ws, ws.config, _settings(), sources, fmt=source_format, labels=labels,
            npz_class_names=names, label_by=labelled_by, dedupe=dedupe,
            progress=shown.counter("analysing images"),
        )
    splits = ", ".join(f"{k} {v}" for k, v in sorted(summary.per_split.items()))
    console.print(f"{summary.equation()}; manifest: {summary.manifest_rows} images ({splits})",
                  highlight=False)
    for source, counts in summary.splits_by_source.items():
        console.print(f"{source} gave {_given_splits(counts)}", highlight=False)
    if summary.dropped_columns:
        console.print(f"label-list columns not kept: {', '.join(summary.dropped_columns)} (name "
                      "the ones to keep for slicing in data.metadata_columns)", highlight=False)
    if summary.quarantined:
        named = "; ".join(f"{n} {code}" for code, n in count_codes(summary.quarantined)
                          .most_common())
        console.print(f"quarantined ({named}): left where they are, listed in "
                      f"{ws.relative(ws.quarantine_log)}; `medimg quarantine --originals` "
                      "shows where each one is", highlight=False)
    if summary.removed_by_dedupe:
        console.print(f"dedupe set aside {len(summary.removed_by_dedupe)} cross-split "
                      "duplicate(s), keeping the more locked copy", highlight=False)
    if summary.cross_split_duplicates:
        console.print(f"[yellow]{summary.cross_split_duplicates} image(s) are in more than one "
                      "split (leakage in the source); `medimg validate` will fail until "
                      "`medimg ingest --dedupe` sets aside the copy in the less locked split "
                      "(test is kept over val over train)[/]")
    if summary.own_patient:
        console.print(f"{summary.own_patient} new image(s) have no patient id; each counts as its "
                      "own patient, so patient leakage cannot be checked for them",
                      highlight=False)


def _given_splits(counts: dict[str, int]) -> str:
    """What one source gave, e.g. ``split test (8 files)`` or ``no split (160 files, ...)``."""
    given = [f"split {split} ({n} files)" for split, n in counts.items() if split != "assigned"]
    if counts.get("assigned"):
        given.append(f"no split ({counts['assigned']} files, assigned per patient)")
    return ", ".join(given)


@app.command()
@_friendly
def quarantine(
    workspace: WorkspaceOpt = None,
    originals: Annotated[bool, typer.Option(
        "--originals", help="Also show each file's original path, from this machine's private "
        "map (it may name patients: for your own screen only).")] = False,
) -> None:
    """The files ingest could not use: reason code, message and where each one is."""
    from medimg.data.private import Originals
    from medimg.data.quarantine import count_codes, read_quarantine

    ws = _workspace(workspace)
    entries = read_quarantine(ws.quarantine_log)
    if not entries:
        console.print("nothing is quarantined", highlight=False)
        return
    local = Originals(ws) if originals else None
    for entry in entries:  # one line a file (two with --originals), for grep and for reading
        console.print(f"{entry.code}\t{entry.path}\t{entry.message}", highlight=False,
                      markup=False, soft_wrap=True)
        if local is not None:
            found = local.originals_of(entry.path) or ["(not in this machine's local map)"]
            for path in found:
                console.print(f"  original: {path}", highlight=False, markup=False,
                              soft_wrap=True)
    counts = "; ".join(f"{n} {code}" for code, n in count_codes(entries).most_common())
    console.print(f"{len(entries)} file(s) quarantined ({counts}); nothing was copied or deleted",
                  highlight=False)


@app.command()
@_friendly
def validate(workspace: WorkspaceOpt = None) -> None:
    """Run the data contract over the manifest; exit 1 on a failed critical expectation."""
    from medimg.validation.stage import run_validate

    ws = _workspace(workspace)
    with _progress() as shown, shown.step("checking the data contract"):
        report = run_validate(ws, ws.config, raise_on_failure=False)
    table = Table("check", "level", "result", "details", title="Data contract")
    for check in report.checks:
        if check.success:
            result = "[green]pass[/]"
        else:
            result = "[red]FAIL[/]" if check.level == "critical" else "[yellow]warn[/]"
        table.add_row(check.name, check.level, result, escape(check.details))
    console.print(table)
    console.print(f"report: {ws.relative(ws.validation_report_path)}; Data Docs: "
                  f"{ws.relative(ws.data_docs_dir)}/index.html", highlight=False)
    if not report.success:
        names = ", ".join(c.name for c in report.failed_critical)
        err.print(f"[bold red]error:[/] {len(report.failed_critical)} critical expectation(s) "
                  f"failed: {names}", highlight=False)
        raise typer.Exit(1)


@app.command()
@_friendly
def preprocess(workspace: WorkspaceOpt = None) -> None:
    """Enhance contrast, denoise and resize every image into packed arrays per split."""
    from medimg.preprocessing.stage import run_preprocess

    ws = _workspace(workspace)
    with _progress() as shown:
        counts = run_preprocess(ws, ws.config, progress=shown.counter("preprocessing images"))
    console.print("packed " + ", ".join(f"{k} {v}" for k, v in counts.items()), highlight=False)


@app.command()
@_friendly
def train(workspace: WorkspaceOpt = None) -> None:
    """Train the configured model and save it as one bundle."""
    from medimg.training.stage import run_train

    ws = _workspace(workspace)
    with _progress() as shown:
        result = run_train(ws, ws.config, _settings(), progress=shown.epochs("training"))
    where = result.placement
    if result.resumed_from:
        console.print(f"resumed after epoch {result.resumed_from} from the checkpoint",
                      highlight=False)
    console.print(f"trained {result.epochs_run} epochs in {result.seconds:.0f}s on {where.device} "
                  f"({where.strategy} strategy, {where.replicas} replica(s), {where.precision}, "
                  f"XLA {'on' if where.jit_compile else 'off'}); kept epoch {result.kept_epoch} "
                  f"(best {result.best_epoch}), val_loss {result.kept_val_loss:.4f}; model saved "
                  f"to {result.model_dir}", highlight=False)


@app.command()
@_friendly
def evaluate(workspace: WorkspaceOpt = None) -> None:
    """Score the test split: metrics JSON, confusion matrix and ROC plots."""
    from medimg.evaluation.stage import run_evaluate

    ws = _workspace(workspace)
    with _progress() as shown:
        result = run_evaluate(ws, ws.config, progress=shown.counter("bootstrap resamples"))
    console.print(_metrics_table(result.metrics))


@app.command()
@_friendly
def register(workspace: WorkspaceOpt = None) -> None:
    """Log the run to MLflow, apply the gates, register and promote the model that passes."""
    from medimg.registry.stage import run_register

    ws = _workspace(workspace)
    start = time.perf_counter()
    with _progress() as shown, shown.step("tracking, gates and registry"):
        result = run_register(ws, ws.config, _settings())
    _print_registration(result, time.perf_counter() - start)


@app.command()
@_friendly
def run(
    workspace: WorkspaceOpt = None,
    source: Annotated[list[Path] | None, typer.Option(
        help="Folder(s) to ingest (default: data/raw).")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Re-run every stage, even those DVC finds up to date.")] = False,
) -> None:
    """Run the Prefect pipeline: the stages of dvc.yaml that are out of date, in its order."""
    ws = _workspace(workspace)
    start = time.perf_counter()
    outcome = _run_flow(ws, source, force)
    _print_summary(outcome, time.perf_counter() - start)


@app.command()
@_friendly
def demo(
    workspace: WorkspaceOpt = None,
    n_images: Annotated[int, typer.Option("--n-images", "-n", help="Phantoms to make.")] = 800,
) -> None:
    """Synthesise phantoms into data/raw and run the whole pipeline on embedded defaults."""
    from medimg.demo import prepare_phantoms

    ws = _workspace(workspace)
    start = time.perf_counter()
    prepare_phantoms(ws, ws.config, n_images,
                     announce=lambda text: console.print(text, highlight=False))
    if _settings().key_bytes() is None:
        console.print("MEDIMG_PSEUDONYM_KEY is unset; the demo pseudonymises phantom patient ids "
                      "with a fixed demo key", highlight=False)
    outcome = _run_flow(ws, None, force=False, demo=True)
    _print_summary(outcome, time.perf_counter() - start)


@app.command()
@_friendly
def retrain(
    workspace: WorkspaceOpt = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Retrain whatever changed, every stage re-run.")] = False,
) -> None:
    """Retrain when new or corrected labels (retrain.min_new_labels) or drift call for it."""
    ws = _workspace(workspace)
    start = time.perf_counter()
    state = _run_flow(ws, None, force, retrain=True)
    if state.is_cancelled():  # another retrain of the workspace is running
        console.print(state.message, highlight=False)
        return
    result = state.result()  # a failed retrain raises its one-line reason
    if result.pipeline is not None:
        _print_summary(result.pipeline, time.perf_counter() - start)
    console.print(result.decision, highlight=False)
    if result.retrained:
        console.print(f"summary: reports/retrain/summary.md and the Prefect artifact "
                      f"{result.artifact_key}", highlight=False)


@app.command()
@_friendly
def schedule(
    workspace: WorkspaceOpt = None,
    cron: Annotated[str | None, typer.Option(
        help='The retrain\'s cron, e.g. "0 2 * * *" (default: MEDIMG_RETRAIN_CRON, then '
             "retrain.schedule).")] = None,
) -> None:
    """Serve the deployments until Ctrl-C: retrain on its schedule, the pipeline on demand.

    Schedules need a Prefect server: PREFECT_API_URL's, or one started here for the while.
    """
    from medimg.preflight import check_services

    ws = _workspace(workspace)
    settings = _settings()
    check_services(settings)
    with _prefect_settings(), _prefect_server(settings.prefect_api_url) as api:
        from flows.deployments import retrain_cron, serve

        console.print(f"serving retrain ({retrain_cron(ws.config, cron)}, "
                      f"{ws.config.retrain.timezone}) and training (on demand) for {ws.root} "
                      f"on {api}; Ctrl-C stops (the schedules stay active)", highlight=False)
        serve(str(ws.root), cron)


@contextmanager
def _prefect_server(api_url: str | None) -> Iterator[str]:
    """The Prefect API to serve against: the user's, or a local server started for the while
    (Prefect's ephemeral API runs no scheduler)."""
    if api_url:
        yield api_url
        return
    import socket
    import subprocess
    import urllib.request

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from medimg.preflight import ServiceUnavailable

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api"
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host",
                               "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise ServiceUnavailable("could not start a local Prefect server "
                                             "(`prefect server start`); start one and set "
                                             "PREFECT_API_URL") from None
                time.sleep(0.5)
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


class _NoTracebackForUserErrors(logging.Filter):
    """Prefect logs a failed task with its traceback; a user-fixable error needs one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], MedimgError):
            record.exc_info = None
            record.exc_text = None
        return True


registry_app = typer.Typer(help="The registered model: versions, aliases and their audit "
                             "trail.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")
ReasonOpt = Annotated[str, typer.Option("--reason", "-r", help="Why, for the audit trail.")]


def _registry(workspace: Path | None):
    from mlflow import MlflowClient

    from medimg.preflight import check_services
    from medimg.tracking import use_workspace_tracking

    ws = _workspace(workspace)
    check_services(_settings(), prefect=False)  # seconds, not MLflow's minutes of retries
    use_workspace_tracking(ws, ws.config.registry.experiment_name, _settings())
    name = ws.config.registry.model_name
    client = MlflowClient()
    try:
        client.get_registered_model(name)
    except Exception as exc:
        if _connection_problem(exc):
            raise
        raise MedimgError(f"no registered model {name!r} in this workspace's registry yet; "
                          "run `medimg run` first") from None
    return client, name


def _print_lines(heading: str, rows) -> None:
    """A heading, then each row's ``line()`` as plain text (no markup from user strings)."""
    console.print(heading, highlight=False)
    for row in rows:
        console.print(row.line(), highlight=False, markup=False)


def _print_moves(moves) -> None:
    for entry in moves:
        console.print(entry.line(), highlight=False)


@registry_app.command("list")
@_friendly
def registry_list(workspace: WorkspaceOpt = None) -> None:
    """Every version with its aliases, test F1 and recall, and lineage."""
    from medimg.registry.listing import list_versions

    client, name = _registry(workspace)
    rows = list_versions(client, name)
    _print_lines(f"{name}: {len(rows)} version(s)", rows)


@registry_app.command("promote")
@_friendly
def registry_promote(
    version: Annotated[str, typer.Argument(help="The version to make champion.")],
    reason: ReasonOpt = "promoted by hand",
    workspace: WorkspaceOpt = None,
) -> None:
    """Make VERSION the champion (the old one keeps previous-champion); audited."""
    from medimg.registry.aliases import CHAMPION, actor, alias_version, promote

    client, name = _registry(workspace)
    try:
        client.get_model_version(name, version)
    except Exception as exc:
        if _connection_problem(exc):
            raise
        raise MedimgError(f"{name} has no version {version}; see `medimg registry list`") from None
    current = alias_version(client, name, CHAMPION)
    if current == version:
        console.print(f"v{version} is already the champion; nothing moved", highlight=False)
        return
    by = _settings().actor or actor()
    _print_moves(promote(client, name, version, reason, by, expected_champion=current))


@registry_app.command("rollback")
@_friendly
def registry_rollback(reason: ReasonOpt = "rolled back by hand",
                      workspace: WorkspaceOpt = None) -> None:
    """Move champion back to the previous champion; audited."""
    from medimg.registry.aliases import actor, rollback

    client, name = _registry(workspace)
    _print_moves(rollback(client, name, reason, _settings().actor or actor()))


@registry_app.command("audit")
@_friendly
def registry_audit(workspace: WorkspaceOpt = None) -> None:
    """Every alias move, oldest first: what, when, why and by whom."""
    from medimg.registry.aliases import audit_trail

    client, name = _registry(workspace)
    trail = audit_trail(client, name)
    if not trail:
        console.print(f"no alias has moved on {name} yet", highlight=False)
    _print_moves(trail)


feedback_app = typer.Typer(help="Reviewers' labels with provenance: add, what waits, decide, "
                           "and the worklist of uncertain predictions.",
                           no_args_is_help=True)
app.add_typer(feedback_app, name="feedback")
ReviewerOpt = Annotated[str, typer.Option("--reviewer", help="Who gives this label or decision.")]


@feedback_app.command("add")
@_friendly
def feedback_add(
    image: Annotated[str, typer.Option(help=(
        "The image: its manifest id or its file's path. A file not in the manifest is "
        "ingested (decode checks, DICOM de-identification), never moved."))],
    label: Annotated[str, typer.Option(help="The class the reviewer gives it.")],
    reviewer: ReviewerOpt = "",
    prediction_id: Annotated[str | None, typer.Option(help="The prediction reviewed.")] = None,
    model_version: Annotated[str | None, typer.Option(help="The model that predicted.")] = None,
    threshold: Annotated[float | None, typer.Option(help="That model's threshold.")] = None,
    note: Annotated[str | None, typer.Option(help="Free text for the log.")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Confirm or correct an image's label; a test-split correction waits for adjudication."""
    from medimg.feedback.review import add_feedback

    ws = _workspace(workspace)
    entry = add_feedback(ws, ws.config, image, label, reviewer, prediction_id=prediction_id,
                         model_version=model_version, threshold=threshold, note=note,
                         settings=_settings())
    console.print(entry.line(), highlight=False, markup=False)


@feedback_app.command("pending")
@_friendly
def feedback_pending(workspace: WorkspaceOpt = None) -> None:
    """Images waiting for adjudication, with every entry that waits on each."""
    from medimg.feedback.review import pending

    items = pending(_workspace(workspace))
    _print_lines(f"{len(items)} image(s) waiting for adjudication", items)


@feedback_app.command("adjudicate")
@_friendly
def feedback_adjudicate(
    entry_id: Annotated[str, typer.Argument(help="The pending entry to decide.")],
    accept: Annotated[bool, typer.Option("--accept/--reject", help="Accept or reject it.")],
    reviewer: ReviewerOpt = "",
    workspace: WorkspaceOpt = None,
) -> None:
    """Accept (the manifest label becomes the entry's) or reject a pending entry."""
    from medimg.feedback.review import adjudicate

    console.print(adjudicate(_workspace(workspace), entry_id, accept, reviewer).line(),
                  highlight=False, markup=False)


@feedback_app.command("worklist")
@_friendly
def feedback_worklist(
    limit: Annotated[int | None, typer.Option(
        "--limit", min=1, help="Show only the first N.", show_default=False)] = None,
    include_reviewed: Annotated[bool, typer.Option(
        "--all", help="Include predictions already reviewed, with their reviewers.")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Predictions recorded for review and not reviewed yet, most uncertain first."""
    from medimg.feedback.predictions import worklist

    items = worklist(_workspace(workspace), include_reviewed=include_reviewed)
    waiting = sum(1 for item in items if not item.reviewed)
    _print_lines(f"{waiting} prediction(s) waiting for review, most uncertain first "
                 "(distance to the decision, then entropy)", items[:limit])


@app.command()
@_friendly
def serve(
    port: Annotated[int | None, typer.Option(help="Port (default serve.port).")] = None,
    host: Annotated[str | None, typer.Option(help="Address (default serve.host, loopback).")
                    ] = None,
    model: Annotated[str | None, typer.Option(help=(
        "Serve this model (models:/NAME/VERSION, models:/NAME@ALIAS, runs:/..., or a bundle "
        "folder) instead of following the champion alias."))] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """The review app: predictions, heat maps and feedback in a web page, and a JSON API."""
    import uvicorn

    from medimg.review.app import create_app
    from medimg.review.auth import Users, users_path
    from medimg.review.live_model import LiveModel

    ws = _workspace(workspace)
    settings = _settings()
    config = ws.config
    users = users_path(ws, settings.users_file)
    if not Users.load(users).digests:
        console.print(f"[yellow]no reviewers in {escape(str(users))}: nobody can log in or "
                      "record feedback; add one with `medimg users add ID`[/]", highlight=False)
    app_ = create_app(ws, config, settings, LiveModel(ws, config, settings, model_uri=model))
    host, port = host or config.serve.host, port or config.serve.port
    console.print(f"medimg review on http://{host}:{port}/ (API docs: /docs)", highlight=False)
    uvicorn.run(app_, host=host, port=port, log_level="warning", access_log=False)


@app.command()
@_friendly
def predict(
    paths: Annotated[list[Path], typer.Argument(help="Image files, or folders of them.")],
    model: Annotated[str | None, typer.Option(help=(
        "models:/NAME/VERSION, models:/NAME@ALIAS, runs:/... or a bundle folder; default the "
        "champion."))] = None,
    out: Annotated[Path | None, typer.Option(help="Write preds.csv or preds.json; default: "
                                                  "CSV on stdout.")] = None,
    gradcam: Annotated[Path | None, typer.Option(help="Write each heat map overlay here.")
                       ] = None,
    for_review: Annotated[bool, typer.Option(help="Put the predictions on the worklist.")
                          ] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Predict many images in batches, with training's preprocessing and decision rule."""
    from rich.progress import Progress

    from medimg.review.batch import image_files, predict_files, write_rows
    from medimg.review.live_model import LiveModel

    ws = _workspace(workspace)
    files = image_files(paths)
    served = LiveModel(ws, ws.config, _settings(), model_uri=model).current()
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task(f"predicting with {served.name} v{served.version}", total=len(files))
        result = predict_files(ws, served, files, ws.config.serve.batch_size,
                               for_review=for_review, gradcam_dir=gradcam,
                               progress=lambda n: bar.advance(task, n))
    text = write_rows(result.rows, out)
    if text is not None:
        console.out(text, end="", highlight=False)
    where = f" -> {out}" if out else ""
    err.print(f"{result.predicted} predicted, {result.refused} refused by "
                      f"{served.name} v{served.version}{where}"
                      + ("; on the worklist" if for_review else ""), highlight=False)


users_app = typer.Typer(help="Reviewers of the review app and their tokens.",
                        no_args_is_help=True)
app.add_typer(users_app, name="users")


@users_app.command("add")
@_friendly
def users_add(reviewer: Annotated[str, typer.Argument(help="The reviewer's id.")],
              workspace: WorkspaceOpt = None) -> None:
    """Add a reviewer (or give one a new token); the token is printed once, never stored."""
    from medimg.review.auth import add_user, users_path

    path = users_path(_workspace(workspace), _settings().users_file)
    token = add_user(path, reviewer)
    console.print(f"reviewer {reviewer} in {path}; token (shown once): {token}",
                  highlight=False, markup=False)


@users_app.command("remove")
@_friendly
def users_remove(reviewer: Annotated[str, typer.Argument(help="The reviewer's id.")],
                 workspace: WorkspaceOpt = None) -> None:
    """Remove a reviewer: their token and sessions stop working at once."""
    from medimg.review.auth import remove_user, users_path

    path = users_path(_workspace(workspace), _settings().users_file)
    if not remove_user(path, reviewer):
        raise typer.BadParameter(f"no reviewer {reviewer!r} in {path}")
    console.print(f"removed {reviewer}", highlight=False, markup=False)


def _tracked(workspace: Path | None):
    from mlflow import MlflowClient

    from medimg.preflight import check_services
    from medimg.tracking import use_workspace_tracking

    ws = _workspace(workspace)
    check_services(_settings(), prefect=False)  # seconds, not MLflow's minutes of retries
    experiment = use_workspace_tracking(ws, ws.config.registry.experiment_name, _settings())
    return ws, MlflowClient(), experiment  # the client made after: it takes the store just set


@app.command("runs")
@_friendly
def runs(workspace: WorkspaceOpt = None, n: Annotated[int, typer.Option(
        "-n", help="How many runs, newest first.")] = 10) -> None:
    """The last runs: status, data version, the params that differ, metrics, gate, version."""
    from medimg.registry.runs import recent_runs
    from medimg.runs_view import runs_table

    ws, client, experiment = _tracked(workspace)
    recent = recent_runs(client, experiment, ws.config.registry.model_name, n)
    for shown in runs_table(recent, console.width):
        console.print(shown, highlight=False)


@app.command("compare")
@_friendly
def compare(
    run_a: Annotated[str, typer.Argument(help="Run A: a run id, id prefix or run name.")],
    run_b: Annotated[str, typer.Argument(help="Run B, compared with A (B - A).")],
    workspace: WorkspaceOpt = None,
) -> None:
    """Two runs side by side; B - A paired on the same test images when they share them."""
    from medimg.registry.runs import compare_runs
    from medimg.runs_view import comparison_tables

    ws, client, experiment = _tracked(workspace)
    with _progress() as shown, shown.step("comparing the runs"):
        compared = compare_runs(client, experiment, ws, ws.config, run_a, run_b)
    for item in comparison_tables(compared):
        console.print(item, highlight=False)


@contextmanager
def _prefect_settings() -> Iterator[None]:
    """Prefect settings for an in-process flow run, never through the environment.

    Defaults only: what the user set (environment, profile) wins. The ephemeral API's process
    is started inside and gets them (Prefect passes the current settings to it); the settings
    are also made process-wide for the while, as Prefect's own test harness does, for Prefect's
    background threads, which do not inherit a context.
    """
    import prefect.context
    from prefect.settings import (
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    # Prefect waits 20 s for its ephemeral API; a cold first start on a small machine is slower
    defaults = {PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 120,
                PREFECT_SERVER_ANALYTICS_ENABLED: False}
    # private, hence looked up: without it only this thread's context has the settings
    process_wide = getattr(prefect.context, "_temporary_global_settings_context", None)
    with temporary_settings(set_defaults=defaults):
        if process_wide is None:
            yield
            return
        with process_wide(prefect.context.get_settings_context()):
            yield


def _run_flow(ws, sources: list[Path] | None, force: bool, demo: bool = False,
              retrain: bool = False):
    from medimg.preflight import check_services

    check_services(_settings())
    with _prefect_settings():
        from flows import training

        quiet = _NoTracebackForUserErrors()
        for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):
            for handler in logging.getLogger(name).handlers:
                handler.addFilter(quiet)
        terminal = _state["quiet"]
        if terminal is not None:  # the flow's own warnings, like medimg's, on the terminal
            flows_dir = (str(Path(training.__file__).parent),)
            for name in ("prefect.flow_runs", "prefect.task_runs"):
                terminal.show_warnings(logging.getLogger(name), only_from=flows_dir)
        with _progress() as shown, training.reporting_progress(shown):
            if retrain:
                from flows.retrain import retrain_flow

                return retrain_flow(str(ws.root), force=force, return_state=True)
            return training.training_pipeline(
                str(ws.root), [str(s) for s in sources] if sources else None, force=force,
                demo=demo)


def _metrics_table(metrics: dict) -> Table:
    from medimg.metric_table import HEADLINE_METRICS

    point = metrics.get("operating_point") or {}
    chosen = f", {point['method']} on validation" if point.get("method") else ""
    ci = metrics.get("ci") or {}
    level = (metrics.get("bootstrap") or {}).get("confidence", 0.95)
    rule = (f"threshold {metrics['threshold']:.4g}{chosen}"
            if metrics.get("threshold") is not None else "arg-max")
    table = Table("metric", "test split", f"{level:.0%} CI (by patient)",
                  title=f"Test metrics (n={metrics['n']}, {rule})")
    for key in HEADLINE_METRICS:
        if key in metrics:
            bounds = ci.get(key)
            interval = f"{bounds['low']:.3f} - {bounds['high']:.3f}" if bounds else "-"
            table.add_row(key, f"{metrics[key]:.3f}", interval)
    table.add_row("confusion matrix", str(metrics["confusion_matrix"]), "")
    return table


def _print_registration(result, seconds: float) -> None:
    gates = Table("gate", "metric", "value", "bound", "result", title="Gates")
    checks = result.gates.checks + (result.champion_checks.checks if result.champion_checks
                                    else [])
    for check in checks:
        value = "missing" if check.value is None else f"{check.value:.3f}"
        bound = "-" if check.bound is None else f"{check.bound:.3f}"
        if check.interval:  # against the champion: the difference and its interval
            low, high = check.interval
            value = f"{check.value:+.3f} ({low:+.3f} to {high:+.3f})"
            bound = f"> {check.bound:+.3f}"
        elif check.name.startswith("min_test_") and check.value is not None:
            value, bound = f"{check.value:.0f}", f"{check.bound:.0f}"
        gates.add_row(check.name, check.metric, value, bound,
                      "[green]pass[/]" if check.passed else "[red]FAIL[/]")
    console.print(gates)
    if result.version:
        aliases = ", ".join(result.aliases) or "none"
        console.print(f"registered version {result.version} (aliases: {aliases})",
                      highlight=False)
    else:
        console.print("[yellow]not registered: a gate failed (see the run's gate.* tags)[/]")
    console.print(f"MLflow run {result.run_id}; finished in {seconds:.0f}s", highlight=False)
    console.print(f"open the results: {result.ui_command}", highlight=False)


def _print_summary(outcome, seconds: float) -> None:
    if outcome.skipped:
        console.print(f"up to date, skipped: {', '.join(outcome.skipped)}", highlight=False)
    if outcome.changed_nothing:
        console.print(f"nothing changed since the last run: nothing trained or registered "
                      f"(finished in {seconds:.0f}s; `medimg run --force` re-runs every stage)",
                      highlight=False)
        return
    if outcome.evaluation is not None:
        console.print(_metrics_table(outcome.evaluation.metrics))
    if outcome.registration is not None:
        _print_registration(outcome.registration, seconds)
    else:
        console.print(f"ran {', '.join(outcome.ran) or 'nothing'}; finished in {seconds:.0f}s",
                      highlight=False)
    if outcome.experiment:
        console.print(f"run {outcome.name}: saved as a DVC experiment (`dvc exp show`); "
                      "`medimg runs` lists recent runs", highlight=False)


def main() -> None:  # pragma: no cover - `python -m medimg`
    app(prog_name="medimg")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
