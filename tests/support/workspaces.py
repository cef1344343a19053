"""Workspaces taken through the pipeline's stages for tests, and copies of ones built once.

:func:`prepare` runs the real stage functions in the pipeline's order, as ``dvc repro`` would,
through the stage asked for. :class:`WorkspaceTemplates` builds, once per session (per xdist
worker), a workspace through each stage with the tiny params, and hands out copies: a copy is a
whole workspace of its own, in the test's tmp dir. :func:`start_after` says how far such a copy
may be taken when a test changes params: the stages that read none of the changed keys (by the
params lists of ``dvc.yaml``, which a test keeps equal to what each stage reads) give the same
outputs as they would have with the change, just as DVC would find them up to date.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medimg.data.private import ORIGINALS_FILE, PRIVATE_DIR
from medimg.evaluation.stage import run_evaluate
from medimg.preprocessing.stage import run_preprocess
from medimg.training.stage import run_train
from medimg.validation.stage import run_validate
from medimg.versioning import read_stages
from medimg.workspace import Workspace, open_workspace, template_file
from support.ingesting import ingest

STAGES = ("ingest", "validate", "preprocess", "train", "evaluate")
"""The stages :func:`prepare` runs, in the pipeline's order (register is left to the test)."""


def prepare(
    ws: Workspace,
    through: str = "evaluate",
    *,
    start: str = "ingest",
    sources: Sequence[Path] | None = None,
) -> Workspace:
    """Run the stages from ``start`` through ``through`` on ``ws`` with its own params.

    Each stage is the function the CLI and the flow call, given ``ws.config``. Ingest reads
    ``sources`` (default ``data/raw``) with the tests' pseudonym key and must account for every
    file it was given; validate raises if a critical check fails.

    Returns:
        ``ws``, for chaining.
    """
    for stage in _stages(start, through):
        if stage == "ingest":
            summary = ingest(ws, sources)
            assert summary.balanced, f"ingest lost files: {summary.equation()}"
        elif stage == "validate":
            run_validate(ws, ws.config)
        elif stage == "preprocess":
            run_preprocess(ws, ws.config)
        elif stage == "train":
            run_train(ws, ws.config)
        else:
            run_evaluate(ws, ws.config)
    return ws


def _stages(start: str, through: str) -> tuple[str, ...]:
    for name in (start, through):
        if name not in STAGES:
            raise ValueError(f"no stage {name!r}; the stages are {STAGES}")
    return STAGES[STAGES.index(start) : STAGES.index(through) + 1]


def _leaves(overrides: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys of ``overrides``: ``{"train": {"epochs": 1}}`` -> ``["train.epochs"]``."""
    keys = []
    for name, value in overrides.items():
        key = f"{prefix}{name}"
        keys.extend(_leaves(value, key + ".") if isinstance(value, dict) and value else [key])
    return keys


def _reads(entry: str, key: str) -> bool:
    """Whether a ``dvc.yaml`` params entry (``data``, ``base.seed``, ``params.yaml:*``) covers
    the param ``key``, or part of it."""
    if entry.endswith(":*"):
        return True
    return key == entry or key.startswith(entry + ".") or entry.startswith(key + ".")


def start_after(overrides: Mapping[str, Any], through: str) -> str | None:
    """The last stage, up to ``through``, that reads none of ``overrides`` and nor does any stage
    before it: a workspace built through it with other values of those keys is the same as one
    built with them. None when ingest itself reads one of them."""
    keys = _leaves(overrides)
    params = {stage.name: stage.params for stage in read_stages(template_file("dvc.yaml"))}
    last = None
    for stage in _stages("ingest", through):
        if any(_reads(entry, key) for entry in params[stage] for key in keys):
            break
        last = stage
    return last


def copy_workspace(source: Workspace, dest: Path) -> Workspace:
    """A copy of ``source`` at ``dest``, as if it had been built there.

    Every path a workspace keeps is relative to its root but one: ingest's private map from
    original file to reference (``data/.private/originals.json``) names the originals as read,
    so the originals under the old root are renamed to the same files under ``dest``. (Ingest's
    stat cache is keyed by the absolute path too; in a copy it misses, and a re-ingest hashes
    the files again.)
    """
    shutil.copytree(source.root, dest, symlinks=True)
    ws = open_workspace(dest)
    originals = ws.root / PRIVATE_DIR / ORIGINALS_FILE
    if originals.is_file():
        moves = {f"{old}/": f"{new}/" for old, new in ((source.root, ws.root),
                                                     (source.root.resolve(), ws.root.resolve()))}
        rebased = {}
        for original, ref in json.loads(originals.read_text()).items():
            old = next((o for o in moves if original.startswith(o)), None)
            rebased[moves[old] + original[len(old):] if old else original] = ref
        originals.write_text(json.dumps(rebased, indent=0, sort_keys=True))
    return ws


class WorkspaceTemplates:
    """Workspaces built through each stage once, each a copy of the one before taken one stage
    on; ``create(root)`` makes a new workspace with the data and params they all share.

    A template is never changed once built, so never hand one to a test: copy it.
    """

    def __init__(self, folder: Path, create: Callable[[Path], Workspace]) -> None:
        self.folder = folder
        self.create = create
        self.built: dict[str, Workspace] = {}

    def through(self, stage: str) -> Workspace:
        """The template built through ``stage``; what is not built yet is built now, one stage
        at a time from the last one built, and each stage's result kept as its template."""
        previous = None
        for name in _stages("ingest", stage):
            if name not in self.built:
                root = self.folder / name
                shutil.rmtree(root, ignore_errors=True)  # what a failed build left
                ws = self.create(root) if previous is None else copy_workspace(previous, root)
                self.built[name] = prepare(ws, name, start=name)
            previous = self.built[name]
        return self.built[stage]


def next_stage(stage: str) -> str:
    """The stage after ``stage`` in :data:`STAGES`."""
    return STAGES[STAGES.index(stage) + 1]
