"""The preprocess stage: every manifest image decoded once and packed, one uint8 array per split."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from medimg.config import Config
from medimg.data.images import UndecodableImage, read_image
from medimg.data.manifest import load_manifest
from medimg.errors import DataError, WorkspaceError
from medimg.preprocessing.transforms import preprocess_image
from medimg.workspace import SPLITS, Workspace

logger = logging.getLogger(__name__)


def run_preprocess(ws: Workspace, config: Config,
                   progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """Write ``data/processed/{split}_images.npy`` and ``_labels.npy`` plus ``index.json``.

    Files are written beside the old ones and swapped in at the end, so a failure leaves the
    previous outputs intact. Images are decoded under ``data.max_pixels``, the bound ingest
    applied. ``progress(done, total)`` is called as images are done, over all splits.

    Raises:
        DataError: An image in the manifest cannot be decoded (changed on disk, or larger than
            a lowered ``data.max_pixels``); one line naming the file and the reason.
    """
    manifest = load_manifest(ws.manifest_path)
    classes = config.base.class_names
    unknown = sorted(set(manifest["label"]) - set(classes))
    if unknown:
        raise WorkspaceError(
            f"manifest labels {unknown} are not in base.class_names; run `medimg validate`"
        )
    gone = [p for p in manifest["source_path"] if not ws.resolve(p).is_file()]
    if gone:
        raise WorkspaceError(
            f"{len(gone)} image(s) in the manifest no longer exist (e.g. {gone[0]}); restore them "
            "(`dvc checkout`, or `dvc pull` from the team's remote)"
        )
    size, channels = config.base.image_size, config.base.channels
    out = ws.processed_dir
    staging = out.with_name(out.name + ".tmp")
    staging.mkdir(parents=True, exist_ok=True)
    index: dict[str, object] = {
        "class_names": classes,
        "image_size": size,
        "channels": channels,
        "preprocess": config.preprocess.model_dump(mode="json"),
        "splits": {},
    }

    def load(stored: str) -> np.ndarray:
        try:
            pixels = read_image(ws.resolve(stored), dicom_frame=config.data.dicom_frame,
                                max_pixels=config.data.max_pixels)
        except UndecodableImage as exc:
            raise DataError(
                f"{stored} cannot be preprocessed: {exc}; restore it (`dvc checkout`) or ingest "
                "again with `medimg ingest`"
            ) from None
        return preprocess_image(pixels, config.preprocess, size, channels)

    counts: dict[str, int] = {}
    total, done = int(manifest["split"].isin(SPLITS).sum()), 0
    if progress:
        progress(done, total)
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for split in SPLITS:
            rows = manifest[manifest["split"] == split]
            # written through a memory map: a split larger than memory never sits in it whole
            images = np.lib.format.open_memmap(
                staging / f"{split}_images.npy", mode="w+", dtype=np.uint8,
                shape=(len(rows), size, size, channels))
            for i, pixels in enumerate(pool.map(load, rows["source_path"], chunksize=16)):
                images[i] = pixels
                done += 1
                if progress:
                    progress(done, total)
            images.flush()
            del images
            labels = np.array([classes.index(x) for x in rows["label"]], dtype=np.int64)
            np.save(staging / f"{split}_labels.npy", labels)
            index["splits"][split] = list(rows["image_id"])
            counts[split] = len(rows)
            logger.info("preprocessed %d %s images", len(rows), split)
    (staging / "index.json").write_text(json.dumps(index, indent=1))
    for item in staging.iterdir():
        out.mkdir(parents=True, exist_ok=True)
        os.replace(item, out / item.name)
    staging.rmdir()
    return counts
