"""``medimg predict``: many images through the model in batches, with the same decoding,
preprocessing and decision rule as training and the review app.

Each file is taken in as the review app takes an upload (:func:`medimg.review.uploads.
accept_image`: content sniffed, DICOM de-identified, ingest's refusals); a refused file gets its
one-line reason in the output and the others go on. ``--for-review`` keeps each image's
pixels-only copy and records its prediction for the worklist, named by content hash only;
``--gradcam DIR`` writes each overlay as ``<image id>.png``. The output (CSV or JSON) is the
user's own file and names each input by the path the user gave.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medimg.data.images import IMAGE_SUFFIXES
from medimg.errors import DataError
from medimg.feedback.predictions import Prediction, record_predictions
from medimg.review.inference import heatmap_png, model_input, predict_inputs
from medimg.review.live_model import Served
from medimg.review.service import known_as
from medimg.review.uploads import RefusedImage, ReviewImage, accept_image, keep_image
from medimg.workspace import Workspace


@dataclass
class BatchResult:
    rows: list[dict[str, object]] = field(default_factory=list)
    predicted: int = 0
    refused: int = 0


def image_files(paths: Iterable[Path]) -> list[Path]:
    """The files named, and the image files under the folders named, in a stable order.

    Raises:
        DataError: a path does not exist, or nothing to predict was found.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(
                    p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                )
            )
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(f"{path} is neither a file nor a folder")
    if not found:
        raise DataError("no image files to predict (PNG, JPEG, BMP, TIFF or DICOM)")
    return found


def predict_files(
    ws: Workspace,
    served: Served,
    files: list[Path],
    batch_size: int,
    for_review: bool = False,
    gradcam_dir: Path | None = None,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> BatchResult:
    """Predict every file, ``batch_size`` images per forward pass.

    Reading, checking and preprocessing run on ``workers`` threads (default one per core), a
    batch ahead of the model, so the cores take in the next batch while the model predicts
    this one. The rows keep the order of ``files``.
    """
    result = BatchResult()
    chunks = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:

        def take_in(chunk: list[Path]) -> list[Future]:
            return [pool.submit(_take_in, ws, served, path) for path in chunk]

        ahead = take_in(chunks[0]) if chunks else []
        for index, chunk in enumerate(chunks):
            taken = [future.result() for future in ahead]
            ahead = take_in(chunks[index + 1]) if index + 1 < len(chunks) else []
            accepted = [t for t in taken if t.image is not None]
            predictions = iter(
                predict_inputs(served, [(t.image.image_id, t.packed) for t in accepted])
            )
            made = []
            for t in taken:
                if t.image is None:
                    result.rows.append({"path": str(t.path), "error": t.error})
                    result.refused += 1
                    continue
                prediction = next(predictions)
                made.append(prediction)
                result.rows.append(_row(t.path, prediction))
                if gradcam_dir is not None:
                    gradcam_dir.mkdir(parents=True, exist_ok=True)
                    (gradcam_dir / f"{t.image.image_id}.png").write_bytes(
                        heatmap_png(served, t.image.pixels, prediction, packed=t.packed)
                    )
                if for_review:
                    keep_image(ws, t.image)
            if for_review and made:
                record_predictions(ws, made)
            result.predicted += len(made)
            if progress:
                progress(len(chunk))
    return result


@dataclass
class _Taken:
    path: Path
    image: ReviewImage | None = None
    packed: np.ndarray | None = None
    error: str = ""


def _take_in(ws: Workspace, served: Served, path: Path) -> _Taken:
    """One file read, checked, de-identified and preprocessed; else its one-line refusal."""
    try:
        data = path.read_bytes()
        image = known_as(ws, data, accept_image(data, ws.config))
    except RefusedImage as exc:
        return _Taken(path, error=str(exc))
    except OSError as exc:
        return _Taken(path, error=f"cannot read the file: {exc.strerror or exc}")
    return _Taken(path, image, model_input(served, image.pixels))


def _row(path: Path, p: Prediction) -> dict[str, object]:
    row: dict[str, object] = {
        "path": str(path),
        "image_id": p.image_id,
        "prediction_id": p.prediction_id,
        "label": p.predicted_label,
    }
    row.update(
        {f"p_{name}": prob for name, prob in zip(p.class_names, p.probabilities, strict=True)}
    )
    row.update(
        {
            "decision_rule": p.decision_rule,
            "threshold": p.threshold,
            "entropy": p.entropy,
            "distance": p.distance,
            "model": p.model_name,
            "model_version": p.model_version,
            "error": "",
        }
    )
    return row


def write_rows(rows: list[dict[str, object]], out: Path | None) -> str | None:
    """Write CSV (or JSON, for a ``.json`` path); with no path, return the CSV text."""
    if out is not None and out.suffix.lower() == ".json":
        out.write_text(json.dumps(rows, indent=2, default=_plain))
        return None
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    if out is None:
        return buffer.getvalue()
    out.write_text(buffer.getvalue())
    return None


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else str(value)
