"""DVC, through its own command line: the stage graph of ``dvc.yaml``, stage status, commits.

``dvc.yaml`` is the one definition of the pipeline's stages, their order and their
dependencies. The Prefect flow reads the order from it with :func:`stage_order`, asks
:func:`stage_changes` whether a stage is up to date, and records what a stage produced with
:func:`commit_stage`, so ``dvc repro``, ``dvc status`` and ``medimg run`` always agree.
"""

from __future__ import annotations

import compileall
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from medimg.errors import WorkspaceError
from medimg.locks import workspace_lock


def run_dvc(root: Path, *args: str) -> str:
    """Run the DVC command line (the one installed beside medimg) in ``root``.

    Its own interface, not its internals. Every call in a workspace holds its ``dvc`` lock
    (:mod:`medimg.locks`): concurrent DVC commands would fail on DVC's repo lock, so they queue.
    Raises WorkspaceError with DVC's first error line.
    """
    with workspace_lock(root, "dvc"):
        result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root,
                                capture_output=True, text=True)
    if result.returncode != 0:
        lines = [x.strip() for x in (result.stderr + result.stdout).splitlines() if x.strip()]
        reason = lines[0].removeprefix("ERROR: ") if lines else f"exit code {result.returncode}"
        raise WorkspaceError(f"`dvc {' '.join(args)}` failed in {root}: {reason}")
    return result.stdout


def is_dvc_repo(root: Path) -> bool:
    return (root / ".dvc").is_dir() and (root / "dvc.yaml").is_file()


@dataclass(frozen=True)
class DvcStage:
    """One stage of ``dvc.yaml``: its command, what it reads and what it writes."""

    name: str
    cmd: str
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    params: tuple[str, ...]
    always_changed: bool = False


def _paths(entries: list | None) -> tuple[str, ...]:
    """Paths of a deps/outs/metrics/plots list, whose items are strings or ``{path: opts}``."""
    found: list[str] = []
    for entry in entries or []:
        found.extend(entry if isinstance(entry, dict) else [entry])
    return tuple(str(p) for p in found)


def _params(entries: list | None) -> tuple[str, ...]:
    """Param keys of a stage; ``{file: None}`` (every param of the file) becomes ``file:*``."""
    keys: list[str] = []
    for entry in entries or []:
        if isinstance(entry, dict):
            for file, names in entry.items():
                keys.extend(names or [f"{file}:*"])
        else:
            keys.append(str(entry))
    return tuple(keys)


def read_stages(dvc_yaml: Path) -> list[DvcStage]:
    """The stages of a ``dvc.yaml``, in the file's order."""
    try:
        spec = yaml.safe_load(dvc_yaml.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise WorkspaceError(f"cannot read {dvc_yaml}: {exc}") from None
    stages = []
    for name, body in (spec.get("stages") or {}).items():
        if not isinstance(body, dict) or "cmd" not in body:
            raise WorkspaceError(f"{dvc_yaml}: stage {name!r} has no cmd")
        cmd = body["cmd"]
        outs = _paths(body.get("outs")) + _paths(body.get("metrics")) + _paths(body.get("plots"))
        stages.append(DvcStage(name, " && ".join(cmd) if isinstance(cmd, list) else str(cmd),
                               _paths(body.get("deps")), outs, _params(body.get("params")),
                               bool(body.get("always_changed", False))))
    return stages


def _variables(spec: dict) -> dict[str, str]:
    """The inline ``vars`` of a ``dvc.yaml`` (entries that name a params file are skipped)."""
    found: dict[str, str] = {}
    for entry in spec.get("vars") or []:
        if isinstance(entry, dict):
            found.update({str(k): str(v) for k, v in entry.items()})
    return found


def compile_outside_deps(root: Path) -> list[Path]:
    """Write the byte-code caches of the dependency folders that lie outside the workspace.

    ``.dvcignore`` keeps ``__pycache__`` out of the hashes only inside the workspace. A stage's
    code deps elsewhere (``medimg init`` points them at the installed package) are hashed with
    their caches, so Python writing a cache there on a later import would read as a code change
    and re-run the stage. Compiled before DVC hashes them, the caches change only when the
    source does. Returns the folders compiled.
    """
    dvc_yaml = root / "dvc.yaml"
    try:
        spec = yaml.safe_load(dvc_yaml.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise WorkspaceError(f"cannot read {dvc_yaml}: {exc}") from None
    names = _variables(spec)

    def resolve(dep: str) -> str:
        return re.sub(r"\$\{\s*(\w+)\s*\}", lambda m: names.get(m.group(1), m.group(0)), dep)

    inside = root.resolve()
    folders = sorted({folder for stage in read_stages(dvc_yaml) for dep in stage.deps
                      if (folder := (root / resolve(dep)).resolve()).is_dir()
                      and inside not in (folder, *folder.parents)})
    for folder in folders:
        compileall.compile_dir(folder, quiet=2, workers=1)
    return folders


def _under(path: str, out: str) -> bool:
    p, o = PurePosixPath(path), PurePosixPath(out)
    return p == o or o in p.parents


def stage_order(dvc_yaml: Path) -> list[DvcStage]:
    """The stages in an order where each comes after every stage whose outputs it reads.

    Ties keep the file's order. Raises WorkspaceError on a cycle.
    """
    stages = read_stages(dvc_yaml)
    upstream = {s.name: {o.name for o in stages if o is not s
                         and any(_under(d, out) for d in s.deps for out in o.outs)}
                for s in stages}
    ordered: list[DvcStage] = []
    done: set[str] = set()
    while len(ordered) < len(stages):
        ready = [s for s in stages if s.name not in done and upstream[s.name] <= done]
        if not ready:
            stuck = sorted(set(upstream) - done)
            raise WorkspaceError(f"{dvc_yaml}: the stages {stuck} depend on each other in a cycle")
        ordered.append(ready[0])
        done.add(ready[0].name)
    return ordered


def _changes(items: list) -> list[str]:
    changes: list[str] = []
    for item in items:
        if isinstance(item, str):
            changes.append(item)
        else:
            for kind, paths in item.items():
                changes.extend(f"{kind}: {p} {state}" for p, state in (
                    paths.items() if isinstance(paths, dict) else [(paths, "")]))
    return changes


def pipeline_status(root: Path, *stages: str) -> dict[str, list[str]]:
    """What DVC finds changed (deps, params or outs), by stage, for ``stages`` or every stage;
    a stage that is up to date is absent. One ``dvc status`` call."""
    found = json.loads(run_dvc(root, "status", *stages, "--json") or "{}")
    return {name: _changes(items) for name, items in found.items()
            if isinstance(items, list) and items}


def stage_changes(root: Path, stage: str) -> list[str]:
    """What DVC finds changed for one stage (its deps, params or outs); empty: up to date."""
    return pipeline_status(root, stage).get(stage, [])


def commit_stage(root: Path, stage: str) -> None:
    """Record a stage's deps, params and outputs in ``dvc.lock``, as ``dvc repro`` would."""
    run_dvc(root, "commit", "--force", "--quiet", stage)


# What a saved experiment carries besides git's tracked files: the pipeline's definition and
# lock, and the small reports DVC shows as params and metrics. DVC adds every top-level metrics,
# params and plots file of dvc.yaml too, so none of those may show a patient's image (the
# Grad-CAM grid is an MLflow artifact, not a DVC plot). Never data/raw, nor anything else
# untracked.
EXPERIMENT_FILES = ("params.yaml", "dvc.yaml", "dvc.lock", "reports/metrics.json",
                    "reports/train_history.csv", "reports/train_run.json",
                    "reports/validation.json", "reports/registration.json")


def experiment_name(text: str) -> str:
    """``text`` as a DVC experiment name (a git ref name): letters, digits, ``-``, ``_``, ``.``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return re.sub(r"\.{2,}", ".", name).removesuffix(".lock") or "medimg-run"


def has_commit(root: Path) -> bool:
    """Whether the git repository at ``root`` has a commit (``dvc exp save`` needs one)."""
    return subprocess.run(["git", "rev-parse", "--verify", "--quiet", "HEAD"], cwd=root,
                          capture_output=True).returncode == 0


# what the first commit of a workspace holds: medimg's own files, never the user's data
FIRST_COMMIT = (".gitignore", "params.yaml", "dvc.yaml", ".dvc/config", ".dvc/.gitignore",
                ".dvcignore")


def first_commit(root: Path) -> bool:
    """Commit the workspace's own files (:data:`FIRST_COMMIT`) in a repository with no commit
    yet, as DVC's experiments need one; True when it made the commit. Only those paths are
    committed, whatever else is staged. A git without an identity commits as ``medimg``."""
    if has_commit(root):
        return False
    files = [name for name in FIRST_COMMIT if (root / name).is_file()]
    named = subprocess.run(["git", "config", "user.email"], cwd=root, capture_output=True,
                           text=True).stdout.strip()
    identity = [] if named else ["-c", "user.name=medimg", "-c", "user.email=medimg@localhost"]
    steps = {"add": ["add", "--", *files],
             "commit": [*identity, "commit", "-q", "-m", "medimg: params.yaml and dvc.yaml",
                        "--", *files]}
    for step, command in steps.items():
        done = subprocess.run(["git", *command], cwd=root, capture_output=True, text=True)
        if done.returncode != 0:
            lines = [x for x in (done.stderr + done.stdout).splitlines() if x.strip()]
            raise WorkspaceError(f"`git {step}` of medimg's own files failed in {root}: "
                                 f"{lines[0] if lines else done.returncode}")
    return True


def save_experiment(root: Path, name: str) -> str:
    """Save the workspace as the DVC experiment ``name`` (``dvc exp save``); returns the name.

    ``dvc exp show`` then lists its params and metrics and ``dvc exp apply NAME`` restores it.
    A repository with no commit gets medimg's first commit (:func:`first_commit`). An existing
    experiment of that name is never overwritten. Raises WorkspaceError when DVC refuses.
    """
    name = experiment_name(name)
    first_commit(root)
    include = [arg for path in EXPERIMENT_FILES if (root / path).is_file()
               for arg in ("--include-untracked", path)]
    run_dvc(root, "exp", "save", "--name", name, *include)
    return name
