"""A quiet terminal: medimg's progress and results on it, what the libraries print in a log.

The checks run what a user runs (the console script, a real workspace) and look at what reaches
the terminal, what reaches the log file, and what Prefect's database holds.
"""

from __future__ import annotations

import io
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import medimg_cli
from rich.console import Console

from medimg.console import ProgressDisplay, QuietTerminal, epoch_note, log_file

ROOT = Path(__file__).resolve().parents[2]
# what TensorFlow, absl, Keras, Prefect and MLflow print when nobody stops them
NOISE = ("I0000", "E0000", "absl", "oneDNN", "cpu_feature_guard", "UserWarning", "NodeDef",
         "Starting temporary server", "Stopping temporary server", "Beginning flow run",
         "Finished in state", "Downloading artifacts", "Traceback")


def _python(script: str, *args: str, env: dict[str, str] | None = None,
            timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


QUIET_SCRIPT = """
    import logging, os, subprocess, sys, warnings
    from pathlib import Path
    from rich.console import Console
    from medimg.console import QuietTerminal

    out, err = Console(soft_wrap=True), Console(stderr=True, soft_wrap=True)
    logging.getLogger("medimg").setLevel(logging.INFO)  # as the CLI sets it
    try:
        with QuietTerminal(Path(sys.argv[1]), out, err):
            os.write(2, b"C-LEVEL-NOISE\\n")  # as TensorFlow's C++ runtime writes
            os.write(1, b"C-LEVEL-STDOUT\\n")
            print("PRINTED-NOISE")
            print("STDERR-NOISE", file=sys.stderr)
            subprocess.run(["sh", "-c", "echo CHILD-NOISE >&2"], check=True)
            warnings.warn("WARNED-NOISE", UserWarning)
            logging.getLogger("absl").warning("ABSL-NOISE")
            logging.getLogger("medimg.training.train").info("OWN-INFO")
            logging.getLogger("medimg.training.train").warning("OWN-WARNING")
            out.print("RESULT-LINE")
            err.print("PROGRESS-LINE")
            raise RuntimeError("failed inside")
    except RuntimeError:
        pass
    print("AFTER-OUT", flush=True)
    os.write(2, b"AFTER-ERR\\n")
    logging.getLogger("absl").warning("AFTER-LOGGED")
"""


def test_library_output_goes_to_the_log_and_the_consoles_keep_the_terminal(tmp_path):
    log = tmp_path / "logs" / "train.log"
    done = _python(QUIET_SCRIPT, str(log))
    assert done.returncode == 0, done.stderr
    shown, kept = done.stdout + done.stderr, log.read_text()
    noise = ("C-LEVEL-NOISE", "C-LEVEL-STDOUT", "PRINTED-NOISE", "STDERR-NOISE", "CHILD-NOISE",
             "WARNED-NOISE", "ABSL-NOISE", "OWN-INFO")
    assert [n for n in noise if n in shown] == []
    assert [n for n in noise if n not in kept] == []
    assert "UserWarning" in kept  # Python warnings go through logging (py.warnings)
    # medimg's own results and progress on the terminal; its own warnings on both
    assert done.stdout.splitlines()[0] == "RESULT-LINE" and "PROGRESS-LINE" in done.stderr
    assert "OWN-WARNING" in done.stderr and "OWN-WARNING" in kept
    assert "RESULT-LINE" not in kept and "PROGRESS-LINE" not in kept
    # everything restored after the failure inside: descriptors, sys streams, logging
    assert "AFTER-OUT" in done.stdout and "AFTER-ERR" in done.stderr
    assert "AFTER-LOGGED" in done.stderr and "AFTER-LOGGED" not in kept


def test_the_log_is_in_the_workspace_git_ignores_it_and_dvc_does_not_own_it(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "params.yaml").write_text("{}\n")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    path = log_file("registry-list", root)
    assert path == root / "reports" / "logs" / "registry-list.log"
    with QuietTerminal(path, Console(file=io.StringIO()), Console(file=io.StringIO())):
        os.write(2, b"noise\n")
    assert path.read_text() == "noise\n"
    assert subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=root).returncode == 0
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=root,
                            capture_output=True, text=True, check=True).stdout
    assert "reports/logs" not in status
    # no DVC output contains the log folder, nor does the log folder contain one
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    outs = [next(iter(o)) if isinstance(o, dict) else o for stage in stages.values()
            for key in ("outs", "metrics", "plots") for o in stage.get(key, [])]
    logs = Path("reports/logs")
    assert [o for o in outs if logs.is_relative_to(o) or Path(o).is_relative_to(logs)] == []
    # outside a workspace the log goes to a folder of the user's, not into the directory
    elsewhere = log_file("synth", tmp_path)
    assert not elsewhere.is_relative_to(tmp_path) and elsewhere.name == "synth.log"


def test_progress_draws_on_a_terminal_only():
    piped = Console(file=io.StringIO(), force_terminal=False, width=120)
    with ProgressDisplay(piped) as shown:
        shown.counter("preprocessing images")(3, 10)
        shown.epochs("training")(1, 3, {"loss": 0.7, "val_loss": 0.6})
        with shown.step("register"):
            pass
    assert piped.file.getvalue() == ""

    terminal = Console(file=io.StringIO(), force_terminal=True, width=160)
    with ProgressDisplay(terminal) as shown:
        report = shown.epochs("training")
        report(0, 3, {})
        report(2, 3, {"loss": 0.61234, "accuracy": 0.5, "val_loss": 0.5, "val_auc": 0.75,
                      "learning_rate": 0.001})
    drawn = terminal.file.getvalue()
    assert "epoch 2/3" in drawn and "loss 0.612  val_loss 0.500  val_auc 0.750" in drawn

    with ProgressDisplay(terminal, enabled=False) as shown:  # --verbose
        shown.counter("bootstrap resamples")(5, 5)
    assert terminal.file.getvalue() == drawn


def test_an_epoch_shows_its_loss_and_validation_metrics():
    logs = {"accuracy": 0.9, "loss": 0.25, "val_accuracy": 0.875, "val_loss": 0.3,
            "images_per_second": 120.0}
    assert epoch_note(logs) == "loss 0.250  val_accuracy 0.875  val_loss 0.300"
    assert epoch_note({}) == ""


def test_medimg_logs_go_to_the_flow_runs_logs_once_and_only_from_inside_a_run():
    from prefect.logging.handlers import APILogHandler

    from flows.training import _in_a_run, _medimg_logs_to_prefect

    logger = logging.getLogger("medimg")
    before, level = list(logger.handlers), logger.level
    try:
        _medimg_logs_to_prefect()
        _medimg_logs_to_prefect()
        added = [h for h in logger.handlers if isinstance(h, APILogHandler)]
        assert len(added) == 1
        record = logger.makeRecord("medimg.x", logging.INFO, __file__, 1, "outside", (), None)
        assert not _in_a_run(record)  # no warning from Prefect about a missing run
        assert all(f(record) is False for f in added[0].filters)
    finally:
        for handler in [h for h in logger.handlers if h not in before]:
            logger.removeHandler(handler)
        logger.setLevel(level)


PREFECT_SCRIPT = """
    import sys
    from medimg.cli import _prefect_settings
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    with _prefect_settings():
        if sys.argv[1] == "value":
            print(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
            raise SystemExit
        from prefect.server.api.server import SubprocessASGIServer

        server = SubprocessASGIServer()
        server.start()
        try:
            with open(f"/proc/{server.server_process.pid}/environ", "rb") as handle:
                env = handle.read().decode().split("\\0")
        finally:
            server.stop()
    print(sorted(e for e in env if e.startswith(("PREFECT_SERVER_ANALYTICS_ENABLED=",
                                                 "PREFECT_SERVER_EPHEMERAL_STARTUP"))))
"""


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
def test_the_ephemeral_api_gets_medimgs_prefect_settings_and_the_users_win(tmp_path):
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("PREFECT_SERVER_", "PREFECT_API_"))}
    clean["PREFECT_HOME"] = str(tmp_path / "prefect")
    started = subprocess.run([sys.executable, "-c", textwrap.dedent(PREFECT_SCRIPT), "server"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300, env=clean)
    assert started.returncode == 0, started.stderr[-3000:]
    assert started.stdout.strip().splitlines()[-1] == str(
        ["PREFECT_SERVER_ANALYTICS_ENABLED=False",
         "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120"])
    users = {**clean, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300"}
    chosen = subprocess.run([sys.executable, "-c", textwrap.dedent(PREFECT_SCRIPT), "value"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120, env=users)
    assert chosen.stdout.strip().splitlines()[-1] == "300", chosen.stderr[-3000:]


def _noise_in(text: str) -> list[str]:
    return [n for n in NOISE if n in text]


@pytest.mark.integration
def test_medimg_run_shows_results_not_library_noise_and_verbose_shows_it(make_workspace,
                                                                         tmp_path):
    ws = make_workspace()
    # TensorFlow's C++ start-up lines at their loudest, and a Prefect database of this test's own
    env = {"TF_CPP_MIN_LOG_LEVEL": "0", "PREFECT_HOME": str(tmp_path / "prefect")}
    assert medimg_cli("ingest", "data/raw", cwd=ws.root, env=env).returncode == 0

    ran = medimg_cli("run", cwd=ws.root, env=env)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "Test metrics" in ran.stdout and "Gates" in ran.stdout and "MLflow run" in ran.stdout
    assert _noise_in(ran.stdout + ran.stderr) == []
    # what stderr holds is medimg's own warnings (a gate fails on this tiny set), one line each
    assert all(line.startswith("WARNING ") for line in ran.stderr.splitlines()), ran.stderr
    log = (ws.root / "reports" / "logs" / "run.log").read_text()
    for line in ("absl::InitializeLog", "Beginning flow run", "epoch 2/2", "Finished in state"):
        assert line in log
    # medimg's records are in the flow run's logs in Prefect's database, beside Prefect's own
    with sqlite3.connect(tmp_path / "prefect" / "prefect.db") as db:
        names = {name for (name,) in db.execute("SELECT name FROM log")}
    assert {"prefect.flow_runs", "medimg.training.train", "medimg.evaluation.stage"} <= names

    # a second run with nothing changed trains and registers nothing, and says so (byte-code
    # Python cached in the package since does not read as a code change)
    again = medimg_cli("run", cwd=ws.root, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "up to date, skipped: validate, preprocess, train, evaluate, register" in again.stdout
    assert "nothing changed since the last run" in again.stdout and "Gates" not in again.stdout

    loud = medimg_cli("--verbose", "train", cwd=ws.root, env=env)
    assert loud.returncode == 0 and "trained 2 epochs" in loud.stdout
    assert "absl::InitializeLog" in loud.stderr and "INFO medimg.training.train" in loud.stderr
    # the Keras shuffle warning is gone at its source, not only hidden
    assert "shuffle=True" not in loud.stderr


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_harness", "clean_mlflow_env")
def test_the_flow_reports_each_long_step_to_a_reporter_in_its_process(make_workspace):
    from contextlib import contextmanager

    from flows.training import reporting_progress, training_pipeline

    events: list[tuple] = []

    class Recorder:
        def counter(self, description):
            return lambda done, total: events.append((description, done, total))

        def epochs(self, description):
            return lambda epoch, total, logs: events.append((description, epoch, total,
                                                             sorted(logs)))

        @contextmanager
        def step(self, description):
            events.append(("step", description))
            yield

    ws = make_workspace({"evaluate": {"bootstrap_resamples": 50}})
    with reporting_progress(Recorder()):
        outcome = training_pipeline(str(ws.root))
    assert [e[1] for e in events if e[0] == "step"] == outcome.ran == [
        "ingest", "validate", "preprocess", "train", "evaluate", "register"]
    last = {e[0]: e for e in events if e[0] != "step"}
    assert last["analysing images"][1:] == (160, 160)
    assert last["preprocessing images"][1:] == (160, 160)
    assert last["training"][1:3] == (2, 2) and "val_loss" in last["training"][3]
    assert last["bootstrap resamples"][1:] == (50, 50)
    events.clear()
    again = training_pipeline(str(ws.root))  # as a Prefect worker runs it: no reporter
    assert again.ran == ["ingest"] and events == []
