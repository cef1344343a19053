"""A workspace: a directory with ``params.yaml`` and ``dvc.yaml``, where the pipeline works.

The repository root is one; ``medimg init DIR`` makes another from the very same two files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path

from medimg.config import SMALL_INPUT_MODELS, Config, auto_image_size, load_config
from medimg.errors import WorkspaceError
from medimg.versioning import compile_outside_deps, first_commit, run_dvc

TEMPLATE_FILES = ("params.yaml", "dvc.yaml")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Workspace:
    """Paths of one workspace. Constructing one checks nothing; :func:`open_workspace` does."""

    root: Path

    @property
    def params_path(self) -> Path:
        return self.root / "params.yaml"

    @property
    def raw_dir(self) -> Path:
        return self.root / "data" / "raw"

    @property
    def manifest_path(self) -> Path:
        return self.root / "data" / "manifest.parquet"

    @property
    def store_dir(self) -> Path:
        """De-identified DICOM copies and images materialised from arrays, by content id."""
        return self.root / "data" / "store"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "data" / "quarantine"

    @property
    def quarantine_log(self) -> Path:
        """One JSON line per quarantined file, written by ingest, counted by validate."""
        return self.quarantine_dir / "quarantine.jsonl"

    @property
    def processed_dir(self) -> Path:
        return self.root / "data" / "processed"

    @property
    def model_dir(self) -> Path:
        return self.root / "models" / "classifier"

    @property
    def checkpoint_dir(self) -> Path:
        """Per-epoch training state, kept until a run finishes so a crashed run resumes."""
        return self.root / "models" / "checkpoints" / "train"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def plots_dir(self) -> Path:
        return self.reports_dir / "plots"

    @property
    def metrics_path(self) -> Path:
        return self.reports_dir / "metrics.json"

    @property
    def validation_report_path(self) -> Path:
        return self.reports_dir / "validation.json"

    @property
    def data_docs_dir(self) -> Path:
        return self.reports_dir / "data_docs"

    @property
    def registration_path(self) -> Path:
        """What the register stage did: the MLflow run, the gate, the version and its aliases."""
        return self.reports_dir / "registration.json"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @cached_property
    def config(self) -> Config:
        """The params, with ``base.image_size: auto`` resolved from the manifest as it is now
        (:meth:`reload_config` after an ingest in the same process)."""
        return resolve_auto(self, load_config(self.params_path))

    def reload_config(self) -> Config:
        """The params read again, ``auto`` resolved against the current manifest."""
        self.__dict__.pop("config", None)
        return self.config

    def relative(self, path: Path) -> str:
        """``path`` relative to the root when inside it, else absolute; always with '/'."""
        path = Path(os.path.abspath(path))
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()

    def resolve(self, stored: str) -> Path:
        """Inverse of :meth:`relative`."""
        path = Path(stored)
        return path if path.is_absolute() else self.root / path

    def require(self, path: Path, made_by: str) -> Path:
        """Return ``path`` or fail saying which stage makes it."""
        if not path.exists():
            raise WorkspaceError(
                f"{self.relative(path)} does not exist; run `medimg {made_by}` first"
            )
        return path


def ingested_short_sides(ws: Workspace) -> list[int]:
    """The shorter side of every image in the manifest's splits (none before ingest)."""
    if not ws.manifest_path.is_file():
        return []
    import pandas as pd

    rows = pd.read_parquet(ws.manifest_path, columns=["width", "height", "split"])
    rows = rows[rows["split"].isin(SPLITS)]
    return [int(v) for v in rows[["width", "height"]].min(axis=1)]


def resolve_auto(ws: Workspace, config: Config) -> Config:
    """``base.image_size: auto`` replaced by the size the ingested images call for."""
    if config.base.image_size != "auto":
        return config
    smallest = 16 if config.model.architecture in SMALL_INPUT_MODELS else 32
    return config.with_image_size(auto_image_size(ingested_short_sides(ws), smallest))


def open_workspace(directory: Path | str | None = None) -> Workspace:
    """The workspace at ``directory`` (default: the current directory), checked.

    Raises:
        WorkspaceError: if the directory does not exist or holds no ``params.yaml``.
    """
    root = Path(os.path.abspath(directory or os.getcwd()))
    if not root.is_dir():
        raise WorkspaceError(
            f"workspace {root} does not exist; create it with `medimg init {root}`"
        )
    if not (root / "params.yaml").is_file():
        raise WorkspaceError(
            f"{root} is not a medimg workspace (no params.yaml); "
            f"create one with `medimg init {root}` or pass --workspace"
        )
    return Workspace(root)


def template_file(name: str) -> Path:
    """The reference copy of a workspace file.

    In a source checkout (editable install) that is the repository root's own file; in an
    installed wheel it is the same file, packed under ``medimg/workspace_template``.
    """
    checkout = Path(__file__).resolve().parent.parent / name
    if checkout.is_file() and (checkout.parent / "pyproject.toml").is_file():
        return checkout
    packed = resources.files("medimg") / "workspace_template" / name
    with resources.as_file(packed) as path:
        if path.is_file():
            return path
    raise WorkspaceError(f"the installed medimg has no {name} template; reinstall medimg")


def init_workspace(directory: Path, force: bool = False) -> Workspace:
    """Create a workspace: git init, dvc init, and the reference params.yaml and dvc.yaml.

    Raises:
        WorkspaceError: if ``directory`` already holds a params.yaml (unless ``force``).
    """
    root = Path(os.path.abspath(directory))
    if (root / "params.yaml").exists() and not force:
        raise WorkspaceError(f"{root} already holds a params.yaml; use --force to overwrite it")
    root.mkdir(parents=True, exist_ok=True)
    for name in TEMPLATE_FILES:
        shutil.copyfile(template_file(name), root / name)
    _point_code_dependencies(root / "dvc.yaml")
    if not (root / ".git").exists():
        _run(["git", "init", "-q"], root)
    if not (root / ".dvc").exists():
        _run(["dvc", "init", "-q"], root)
        _run(["dvc", "config", "core.autostage", "true"], root)
        _run(["dvc", "config", "core.analytics", "false"], root)
    compile_outside_deps(root)
    gitignore = root / ".gitignore"
    # data/raw may name patients in its paths and show them in its pixels: git never holds it
    ignored = ["/data/raw/", "/mlflow.db", "/mlartifacts/", "/models/", "/reports/data_docs/",
               "/reports/plots/gradcam.png", "/data/processed/", "/data/.ingest_cache.json",
               "/.medimg/"]
    existing = gitignore.read_text().splitlines() if gitignore.exists() else []
    gitignore.write_text("\n".join(existing + [e for e in ignored if e not in existing]) + "\n")
    first_commit(root)  # DVC saves each pipeline run as an experiment on top of it
    return Workspace(root)


CODE_VAR_LINE = "  - code: medimg\n"


def _point_code_dependencies(dvc_yaml: Path) -> None:
    """Make the stages' code deps name the installed package, which a new workspace lacks."""
    text = dvc_yaml.read_text()
    if (dvc_yaml.parent / "medimg").is_dir() or CODE_VAR_LINE not in text:
        return
    package = Path(__file__).resolve().parent.as_posix()
    dvc_yaml.write_text(text.replace(CODE_VAR_LINE, f"  - code: {package}\n", 1))


def _run(cmd: list[str], cwd: Path) -> None:
    if cmd[0] == "dvc":
        run_dvc(cwd, *cmd[1:])
        return
    exe = shutil.which(cmd[0])
    if exe is None:
        raise WorkspaceError(f"`{cmd[0]}` is not installed; install it and rerun")
    result = subprocess.run([exe, *cmd[1:]], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        detail = [x for x in (result.stderr + result.stdout).splitlines() if x.strip()]
        raise WorkspaceError(f"`{' '.join(cmd)}` failed in {cwd}: {detail[0] if detail else ''}")
