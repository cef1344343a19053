"""The packed arrays the preprocess stage writes and training and evaluation read.

``data/processed/{split}_images.npy`` (N, S, S, C) uint8, ``{split}_labels.npy`` (N,) int and
``index.json`` (class names, image size, channels, preprocess params, image ids per split).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from medimg.config import Config
from medimg.errors import WorkspaceError
from medimg.workspace import Workspace


@dataclass(frozen=True)
class PackedSplit:
    """One split as arrays: images (N, S, S, C) uint8, labels (N,) int, image ids (N,)."""

    images: np.ndarray
    labels: np.ndarray
    image_ids: list[str]


def load_split(ws: Workspace, split: str, mmap: bool = True) -> PackedSplit:
    """A packed split, memory-mapped by default so large sets are not loaded whole."""
    out = ws.processed_dir
    index_path = ws.require(out / "index.json", "preprocess")
    index = json.loads(index_path.read_text())
    images = np.load(out / f"{split}_images.npy", mmap_mode="r" if mmap else None)
    labels = np.load(out / f"{split}_labels.npy")
    return PackedSplit(images=images, labels=labels, image_ids=index["splits"][split])


def load_index(ws: Workspace) -> dict[str, object]:
    return json.loads(ws.require(ws.processed_dir / "index.json", "preprocess").read_text())


def check_packed_with(
    index: dict[str, object], class_names: list[str], image_size: int, channels: int,
    preprocess: dict[str, object], fix: str,
) -> None:
    """Fail when the packed arrays were made with other settings than these."""
    found = (index["class_names"], index["image_size"], index["channels"], index["preprocess"])
    if found != (list(class_names), image_size, channels, preprocess):
        raise WorkspaceError(f"data/processed was made with other settings; {fix}")


def check_matches_config(index: dict[str, object], config: Config) -> None:
    """Fail when params changed since the arrays were written."""
    check_packed_with(index, config.base.class_names, config.base.image_size,
                      config.base.channels, config.preprocess.model_dump(mode="json"),
                      "run `medimg preprocess`")
