"""The train, val and test splits as MLflow datasets: what a run trained and was scored on.

Each split is one dataset input of the run, named ``train``, ``val`` or ``test``, with:

- a digest: the split's own hash (its image ids with their labels), so two runs with the same
  digest saw the same images under the same labels;
- a source: the DVC data version (the manifest's md5 in ``dvc.lock``), the manifest's path in
  the workspace and the git commit, from which ``dvc`` restores the exact rows;
- a schema: the manifest columns that describe a row of the split;
- a profile: images, patients and images per class.

Nothing identifying is in any of them: image ids are content hashes, patients are only counted.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from medimg.data.splits import SPLIT_ORDER

if TYPE_CHECKING:
    from mlflow.data.dataset import Dataset

SOURCE_TYPE = "dvc"
# the manifest columns that describe one row of a split (the rest are per-image statistics)
SCHEMA_COLUMNS = {"image_id": "string", "label": "string", "label_source": "string",
                  "patient_id": "string", "split": "string", "format": "string",
                  "width": "long", "height": "long", "channels": "long"}


def split_digest(manifest: pd.DataFrame, split: str) -> str:
    """The hash of a split's image ids and labels (16 hex digits); the same for the same rows
    in any order."""
    rows = manifest.loc[manifest["split"] == split, ["image_id", "label"]]
    lines = sorted(f"{i}\t{label}" for i, label in rows.itertuples(index=False))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def split_profile(manifest: pd.DataFrame, split: str, class_names: list[str]) -> dict[str, Any]:
    """Images, patients and images per class (every configured class, zero included)."""
    rows = manifest[manifest["split"] == split]
    counts = rows["label"].value_counts()
    return {"images": len(rows), "patients": int(rows["patient_id"].nunique()),
            "per_class": {name: int(counts.get(name, 0)) for name in class_names}}


def _dataset_classes() -> tuple[type, type]:
    """The DVC source and the profiled dataset, defined on first use: importing MLflow takes
    seconds, and stages that log nothing should not pay for it."""
    from mlflow.data.dataset_source import DatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    class DvcManifestSource(DatasetSource):
        """A manifest at one DVC data version: ``dvc`` in the workspace restores its rows."""

        def __init__(self, path: str, data_version: str, git_commit: str) -> None:
            self.path, self.data_version, self.git_commit = path, data_version, git_commit

        @staticmethod
        def _get_source_type() -> str:
            return SOURCE_TYPE

        def load(self, dst_path: str | None = None) -> str:
            """The manifest's copy in the workspace's DVC cache (run from the workspace)."""
            md5 = self.data_version
            cached = Path(".dvc/cache/files/md5") / md5[:2] / md5[2:]
            if not cached.is_file():
                raise FileNotFoundError(f"{self.path} at data version {md5} is not in the DVC "
                                        "cache here; run `dvc pull` in the workspace")
            return str(cached.resolve())

        @staticmethod
        def _can_resolve(raw_source: Any) -> bool:
            return False

        @classmethod
        def _resolve(cls, raw_source: Any) -> DvcManifestSource:
            raise NotImplementedError("a DVC manifest source is made from its dict")

        def to_dict(self) -> dict[str, Any]:
            return {"path": self.path, "data_version": self.data_version,
                    "git_commit": self.git_commit}

        @classmethod
        def from_dict(cls, source_dict: dict[str, Any]) -> DvcManifestSource:
            return cls(source_dict["path"], source_dict["data_version"],
                       source_dict.get("git_commit", "unknown"))

    class ProfiledDataset(MetaDataset):
        """A dataset described by its source, digest, schema and a profile (no rows)."""

        def __init__(self, source: DatasetSource, name: str, digest: str, schema: Any,
                     profile: dict[str, Any]) -> None:
            self._profile = profile
            super().__init__(source=source, name=name, digest=digest, schema=schema)

        @property
        def profile(self) -> dict[str, Any]:
            return self._profile

        def to_dict(self) -> dict[str, str]:
            return {**super().to_dict(), "profile": json.dumps(self._profile)}

    return DvcManifestSource, ProfiledDataset


def split_datasets(manifest: pd.DataFrame, class_names: list[str], manifest_path: str,
                   data_version: str, git_commit: str) -> dict[str, Dataset]:
    """One MLflow dataset per split that has rows, by split name."""
    from mlflow.types import ColSpec, Schema

    source_class, dataset_class = _dataset_classes()
    source = source_class(manifest_path, data_version, git_commit)
    schema = Schema([ColSpec(kind, name) for name, kind in SCHEMA_COLUMNS.items()])
    return {split: dataset_class(source, split, split_digest(manifest, split), schema,
                                 split_profile(manifest, split, class_names))
            for split in SPLIT_ORDER if (manifest["split"] == split).any()}


def log_split_inputs(client: Any, run_id: str, datasets: dict[str, Dataset]) -> None:
    """The splits as the run's dataset inputs, each tagged with its context (its split)."""
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    client.log_inputs(run_id, datasets=[
        DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, split)])
        for split, dataset in datasets.items()])


def logged_split_names(client: Any, run_id: str) -> set[str]:
    """The names of the datasets already logged as inputs of ``run_id``."""
    inputs = client.get_run(run_id).inputs
    return {d.dataset.name for d in (inputs.dataset_inputs if inputs else [])}
