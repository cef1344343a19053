"""The preprocess stage: the manifest's images packed into one uint8 array per split.

Images come from the preprocess cache (:mod:`medimg.preprocessing.cache`); only those missing
from it are decoded, so a label or split change, or a run with new images, decodes only what is
new.
"""

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
from medimg.preprocessing.cache import PreprocessCache
from medimg.preprocessing.transforms import preprocess_image
from medimg.workspace import SPLITS, Workspace

logger = logging.getLogger(__name__)

CACHE_BLOCK = 1024
"""Images copied from the cache, or appended to it, at a time."""


def run_preprocess(ws: Workspace, config: Config,
                   progress: Callable[[int, int], None] | None = None,
                   decoded: Callable[[str], None] | None = None) -> dict[str, int]:
    """Write ``data/processed/{split}_images.npy`` and ``_labels.npy`` plus ``index.json``.

    Files are written beside the old ones and swapped in at the end, so a failure leaves the
    previous outputs intact. An image is taken from the preprocess cache when its id and the
    pixel params are unchanged; otherwise it is decoded under ``data.max_pixels``, the bound
    ingest applied, and cached. ``progress(done, total)`` is called as images are done, over
    all splits, and ``decoded(image_id)`` for each image that was decoded rather than cached.

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

    cache = PreprocessCache.for_config(ws, config)
    cache.open()

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
    fresh = 0
    total, done = int(manifest["split"].isin(SPLITS).sum()), 0
    if progress:
        progress(done, total)
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for split in SPLITS:
            rows = manifest[manifest["split"] == split]
            ids, stored = rows["image_id"].tolist(), rows["source_path"].tolist()
            # written through a memory map: a split larger than memory never sits in it whole
            images = np.lib.format.open_memmap(
                staging / f"{split}_images.npy", mode="w+", dtype=np.uint8,
                shape=(len(rows), size, size, channels))
            # what the cache holds is copied in blocks; only the rest is decoded
            where = cache.rows(ids)
            _require_files(ws, [stored[i] for i in np.flatnonzero(where < 0)])
            missing = list(np.flatnonzero(where < 0))
            cached = np.flatnonzero(where >= 0)
            for start in range(0, len(cached), CACHE_BLOCK):
                block = cached[start:start + CACHE_BLOCK]
                pixels, valid = cache.read(where[block])
                images[block[valid]] = pixels[valid]
                for position in block[~valid]:
                    logger.warning("preprocess cache entry for %s is damaged; decoding it again",
                                   ids[position])
                missing.extend(block[~valid])
                done += int(valid.sum())
                if progress:
                    progress(done, total)
            missing.sort()
            decoded_now: list[tuple[str, np.ndarray]] = []
            for position, image in zip(missing, pool.map(load, [stored[i] for i in missing]),
                                       strict=True):
                images[position] = image
                decoded_now.append((ids[position], image))
                if decoded:
                    decoded(ids[position])
                done += 1
                if progress:
                    progress(done, total)
                if len(decoded_now) >= CACHE_BLOCK:
                    cache.put_many(decoded_now)
                    decoded_now = []
            cache.put_many(decoded_now)
            fresh += len(missing)
            images.flush()
            del images
            labels = rows["label"].map({c: i for i, c in enumerate(classes)}).to_numpy(
                dtype=np.int64)
            np.save(staging / f"{split}_labels.npy", labels)
            index["splits"][split] = ids
            counts[split] = len(rows)
            logger.info("preprocessed %d %s images", len(rows), split)
    (staging / "index.json").write_text(json.dumps(index, indent=1))
    for item in staging.iterdir():
        out.mkdir(parents=True, exist_ok=True)
        os.replace(item, out / item.name)
    staging.rmdir()
    cache.keep_only(set(manifest["image_id"]))
    logger.info("decoded %d of %d images; the rest came from the preprocess cache", fresh, total)
    return counts


def _require_files(ws: Workspace, stored: list[str]) -> None:
    """Fail in one line, before decoding any, when images to decode are gone from disk."""
    root = str(ws.root)  # os.path, not pathlib: one stat per image, thousands of images
    gone = [p for p in stored
            if not os.path.isfile(p if os.path.isabs(p) else os.path.join(root, p))]
    if gone:
        raise WorkspaceError(
            f"{len(gone)} image(s) in the manifest no longer exist (e.g. {gone[0]}); restore them "
            "(`dvc checkout`, or `dvc pull` from the team's remote)"
        )
