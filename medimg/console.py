"""The terminal: medimg's own output and progress; what the libraries print goes to a log file.

TensorFlow's C++ runtime writes its start-up lines straight to file descriptor 2, MLflow and
Keras print progress bars and warnings, Prefect, absl and TensorFlow log through Python, and
child processes (Prefect's ephemeral API, DVC) inherit the descriptors. None of that is for the
person at the terminal. :class:`QuietTerminal` points descriptors 1 and 2 at a log file for the
length of one command, so everything written there, from any language or process, lands in the
log; medimg's own Rich consoles keep writing to copies of the original descriptors.

:class:`ProgressDisplay` draws a row per long step (files ingested, images preprocessed, training
epochs with the last epoch's losses, bootstrap resamples). The library code it reports on takes
plain callbacks and knows nothing of Rich.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import IO, Protocol

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

Counter = Callable[[int, int], None]
"""``progress(done, total)``: how many of ``total`` items are done."""

EpochReport = Callable[[int, int, Mapping[str, float]], None]
"""``progress(epoch, total_epochs, logs)``: an epoch finished, with its loss and metrics."""

LOG_FOLDER = ("reports", "logs")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
GITIGNORE = "# medimg: each command's library output (medimg --verbose shows it instead)\n*\n"


def log_file(command: str, workspace: Path | None) -> Path:
    """Where ``command`` writes what the libraries print.

    ``<workspace>/reports/logs/<command>.log`` in a workspace (git-ignored by a ``.gitignore`` of
    its own, not a DVC output); anywhere else (``init``, ``synth``, a directory that is not a
    workspace yet) a folder of this user's in the temporary directory.
    """
    root = Path(os.path.abspath(workspace or Path.cwd()))
    if (root / "params.yaml").is_file():
        return root.joinpath(*LOG_FOLDER, f"{command}.log")
    user = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"medimg-{user}-logs" / f"{command}.log"


def _in_a_workspace(folder: Path) -> bool:
    return folder.parts[-2:] == LOG_FOLDER and (folder.parent.parent / "params.yaml").is_file()


def _prepare_folder(folder: Path, private: bool) -> None:
    folder.mkdir(mode=0o700 if private else 0o777, parents=True, exist_ok=True)
    ignore = folder / ".gitignore"
    if not private and not ignore.exists():
        ignore.write_text(GITIGNORE)


def _flush_python_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError, AttributeError):
            stream.flush()


class _OwnWarnings(logging.Handler):
    """medimg's WARNING and ERROR records, one line each on the terminal (the log gets them too,
    through the root logger).

    ``only_from`` keeps the records logged from code in those folders: the flow's own warnings
    arrive on Prefect's run loggers, beside Prefect's own records.
    """

    def __init__(self, console: Console, only_from: tuple[str, ...] = ()) -> None:
        super().__init__(logging.WARNING)
        self.console = console
        self.only_from = only_from

    def emit(self, record: logging.LogRecord) -> None:
        if self.only_from and not record.pathname.startswith(self.only_from):
            return
        try:
            where = (getattr(record, "task_name", None) or getattr(record, "flow_name", None)
                     or record.name)
            style = "red" if record.levelno >= logging.ERROR else "yellow"
            # never "error:" at the start: that line is the command's own failure, and it is one
            self.console.print(f"[{style}]{record.levelname}[/] {escape(str(where))}: "
                               f"{escape(record.getMessage())}", highlight=False, soft_wrap=True)
        except Exception:
            self.handleError(record)


class QuietTerminal:
    """File descriptors 1 and 2 into ``log`` while inside; ``consoles`` keep the terminal.

    On entry the descriptors are copied, then pointed at the log file; each console is given a
    stream on the copy of its own descriptor. Python warnings are routed through logging (the
    ``py.warnings`` logger), which like every other library logger ends in the log (through a
    root handler added here when there is none); medimg's own warnings also show on the
    terminal. On exit, also after an error, the descriptors, the consoles, the warnings routing
    and the handlers are restored and the copies closed. With the root handler gone, what
    libraries log as the interpreter shuts down (Prefect stopping its ephemeral API) below
    WARNING is dropped rather than printed after the results.
    """

    def __init__(self, log: Path, out: Console, err: Console) -> None:
        self.log = log
        self.consoles = (out, err)
        self._saved: list[int] = []
        self._streams: list[IO[str]] = []
        self._files: list[tuple[Console, IO[str] | None]] = []
        self._handlers: list[tuple[logging.Logger, logging.Handler]] = []

    @property
    def err(self) -> Console:
        return self.consoles[1]

    def __enter__(self) -> QuietTerminal:
        # a workspace's files are as readable as the workspace; elsewhere (the shared
        # temporary directory) the log is this user's alone
        private = not _in_a_workspace(self.log.parent)
        _prepare_folder(self.log.parent, private)
        _flush_python_streams()
        try:
            for fd in (1, 2):
                self._saved.append(os.dup(fd))
            target = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND,
                             0o600 if private else 0o666)
            try:
                os.dup2(target, 1)
                os.dup2(target, 2)
            finally:
                os.close(target)
        except OSError:
            self._restore_descriptors()
            raise
        for console, saved, original in zip(self.consoles, self._saved,
                                            (sys.__stdout__, sys.__stderr__), strict=True):
            stream = open(saved, "w", buffering=1, closefd=False, errors="replace",
                          encoding=getattr(original, "encoding", None) or "utf-8")
            self._streams.append(stream)
            # Console.file falls back to sys.stdout/sys.stderr when _file is None; keep that
            self._files.append((console, getattr(console, "_file", None)))
            console.file = stream
        root = logging.getLogger()
        if not root.handlers:  # else (Prefect configured logging already) theirs write to fd 2
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter(LOG_FORMAT))
            root.addHandler(handler)
            self._handlers.append((root, handler))
        logging.captureWarnings(True)
        self.show_warnings(logging.getLogger("medimg"))
        return self

    def show_warnings(self, logger: logging.Logger, only_from: tuple[str, ...] = ()) -> None:
        """Also show ``logger``'s WARNING+ records on the terminal, until the end."""
        handler = _OwnWarnings(self.err, only_from)
        logger.addHandler(handler)
        self._handlers.append((logger, handler))

    def has_output(self) -> bool:
        """Whether anything was written to the log."""
        _flush_python_streams()
        try:
            return self.log.stat().st_size > 0
        except OSError:
            return False

    def __exit__(self, *exc: object) -> None:
        for logger, handler in self._handlers:
            logger.removeHandler(handler)
        self._handlers.clear()
        logging.captureWarnings(False)
        _flush_python_streams()  # what Python buffered belongs in the log
        for console, previous in self._files:
            console.file = previous  # type: ignore[assignment]
        self._files.clear()
        for stream in self._streams:
            with suppress(OSError, ValueError):
                stream.close()  # flushes; the descriptor stays open (closefd=False)
        self._streams.clear()
        self._restore_descriptors()

    def _restore_descriptors(self) -> None:
        for fd, saved in zip((1, 2), self._saved, strict=False):
            os.dup2(saved, fd)
            os.close(saved)
        self._saved = []


class ProgressReporter(Protocol):
    """What the long steps report to: the CLI's display, or nothing (a Prefect worker)."""

    def counter(self, description: str) -> Counter: ...

    def epochs(self, description: str) -> EpochReport: ...

    def step(self, description: str) -> AbstractContextManager[None]: ...


def epoch_note(logs: Mapping[str, float]) -> str:
    """The training loss and the validation metrics of an epoch, e.g.
    ``loss 0.512  val_loss 0.601  val_accuracy 0.812``."""
    shown = [k for k in logs if k == "loss"] + [k for k in logs if k.startswith("val_")]
    return "  ".join(f"{k} {logs[k]:.3f}" for k in shown)


class ProgressDisplay:
    """A Rich progress row per long step, on ``console`` (the terminal's stderr).

    Off when that console is not a terminal: a pipe or a file gets the results only, never a
    stream of redraws. Rows are transient: once the command is done they make way for its
    results. Library output never passes through it (stdout and stderr are not redirected into
    the display: in quiet mode they go to the log).
    """

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self._progress = Progress(
            SpinnerColumn(finished_text="[green]✓[/]"),
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[count]}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[note]}"),
            console=console,
            transient=True,
            disable=not (enabled and console.is_terminal),
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._lock = threading.Lock()

    def __enter__(self) -> ProgressDisplay:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def _add(self, description: str, total: float | None) -> TaskID:
        return self._progress.add_task(description, total=total, count="", note="")

    def counter(self, description: str) -> Counter:
        """A row that appears at the first report: ``done/total`` and a bar."""
        task: list[TaskID] = []

        def report(done: int, total: int | None) -> None:
            with self._lock:
                if not task:
                    task.append(self._add(description, total))
            count = f"{done}/{total}" if total else str(done)
            self._progress.update(task[0], completed=done, total=total, count=count)

        return report

    def epochs(self, description: str = "training") -> EpochReport:
        """A row of epochs, with the last epoch's loss and validation metrics."""
        task: list[TaskID] = []

        def report(epoch: int, total: int, logs: Mapping[str, float]) -> None:
            with self._lock:
                if not task:
                    task.append(self._add(description, total))
            self._progress.update(task[0], completed=epoch, total=total,
                                  count=f"epoch {epoch}/{total}", note=epoch_note(logs))

        return report

    @contextmanager
    def step(self, description: str) -> Iterator[None]:
        """A row with a spinner while the block runs, ticked when it ends."""
        task = self._add(description, None)
        try:
            yield
        finally:
            self._progress.update(task, total=1, completed=1)
