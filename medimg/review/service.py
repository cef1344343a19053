"""What the review app and ``medimg predict`` do, apart from HTTP: take in an image, predict,
record the prediction for review, draw its heat map, and record a reviewer's answer through the
feedback API (:mod:`medimg.feedback.review`)."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from medimg.config import Config
from medimg.data.images import decode_image
from medimg.data.manifest import load_manifest
from medimg.errors import DataError
from medimg.feedback.log import LOCK, FeedbackEntry
from medimg.feedback.predictions import (
    Prediction,
    WorkItem,
    find_prediction,
    record_predictions,
    worklist,
)
from medimg.feedback.review import add_feedback
from medimg.locks import workspace_lock
from medimg.review.inference import heatmap_png, predict
from medimg.review.live_model import LiveModel, Served
from medimg.review.uploads import ReviewImage, accept_image, image_path, keep_image
from medimg.settings import Settings
from medimg.workspace import Workspace

_MANIFEST_IDS: dict[Path, tuple[float, frozenset[str]]] = {}


def manifest_ids(ws: Workspace) -> frozenset[str]:
    """The manifest's image ids, read again only when the manifest changes."""
    path = ws.manifest_path
    if not path.is_file():
        return frozenset()
    stamp = path.stat().st_mtime
    cached = _MANIFEST_IDS.get(path)
    if cached is None or cached[0] != stamp:
        cached = (stamp, frozenset(load_manifest(path)["image_id"]))
        _MANIFEST_IDS[path] = cached
    return cached[1]


def known_as(ws: Workspace, data: bytes, image: ReviewImage) -> ReviewImage:
    """The image named by the manifest's id when its file is already ingested (the sha256 of
    the original bytes), so feedback on it relabels that row instead of ingesting a copy."""
    original = hashlib.sha256(data).hexdigest()
    return replace(image, image_id=original) if original in manifest_ids(ws) else image


class NotFound(DataError):
    """What a request names does not exist (HTTP 404)."""


@dataclass(frozen=True)
class Answer:
    """A prediction and the model version that made it."""

    prediction: Prediction
    served: Served


class ReviewService:
    def __init__(
        self, ws: Workspace, config: Config, settings: Settings | None, model: LiveModel
    ) -> None:
        self.ws, self.config, self.settings, self.model = ws, config, settings, model
        self._heatmaps: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def predict_upload(self, data: bytes) -> Answer:
        """Predict one uploaded file and put the prediction on the worklist."""
        image = known_as(self.ws, data, accept_image(data, self.config))
        served = self.model.current()
        keep_image(self.ws, image)
        [prediction] = predict(served, [(image.image_id, image.pixels)])
        record_predictions(self.ws, [prediction])
        return Answer(prediction, served)

    def prediction(self, prediction_id: str) -> Prediction:
        try:
            with workspace_lock(self.ws.root, LOCK):  # never a line half-appended
                return find_prediction(self.ws, prediction_id)
        except DataError:
            raise NotFound("no such prediction; see the worklist") from None

    def image_file(self, prediction_id: str) -> tuple[bytes, str]:
        """The kept image of a prediction and its media type."""
        path = image_path(self.ws, self.prediction(prediction_id).image_id)
        if path is None:
            raise NotFound("the image of this prediction is not kept here")
        return path.read_bytes(), "image/jpeg" if path.suffix == ".jpg" else "image/png"

    def heatmap_png(self, prediction_id: str) -> bytes:
        """The Grad-CAM overlay of the model version that made the prediction."""
        with self._lock:
            if prediction_id in self._heatmaps:
                self._heatmaps.move_to_end(prediction_id)
                return self._heatmaps[prediction_id]
        prediction = self.prediction(prediction_id)
        served = self.model.version(prediction.model_version)
        pixels = decode_image(self.image_file(prediction_id)[0])
        png = heatmap_png(served, pixels, prediction)
        with self._lock:
            self._heatmaps[prediction_id] = png
            while len(self._heatmaps) > 64:
                self._heatmaps.popitem(last=False)
        return png

    def record_answer(
        self, prediction_id: str, label: str, reviewer: str, note: str | None = None
    ) -> FeedbackEntry:
        """A reviewer confirms (the predicted label) or corrects (another) a prediction."""
        prediction = self.prediction(prediction_id)
        image = prediction.image_id
        if image not in manifest_ids(self.ws):  # new: the feedback API ingests the kept copy
            kept = image_path(self.ws, prediction.image_id)
            if kept is None:
                raise NotFound(
                    "the image of this prediction is not kept here, so it cannot be "
                    "labelled from the app; use `medimg feedback add --image FILE`"
                )
            image = str(kept)
        return add_feedback(
            self.ws,
            self.config,
            image,
            label,
            reviewer,
            prediction_id=prediction_id,
            note=note or None,
            settings=self.settings,
        )

    def worklist(self, include_reviewed: bool = False, limit: int | None = None) -> list[WorkItem]:
        items = worklist(self.ws, include_reviewed=include_reviewed)
        return items[:limit] if limit else items

    def next_after(self, prediction_id: str, items: Sequence[WorkItem] | None = None) -> str | None:
        """The prediction after this one on the worklist (waiting ones, most uncertain first),
        wrapping round; the first waiting one when this one is reviewed; None when none waits
        but this one.

        Args:
            prediction_id: The prediction being reviewed.
            items: The worklist as :meth:`worklist` gives it (reviewed ones may be included),
                when the caller has read it already; else it is read here.
        """
        if items is None:
            items = self.worklist()
        waiting = [item.prediction.prediction_id for item in items if not item.reviewed]
        if prediction_id in waiting:
            at = waiting.index(prediction_id)
            waiting = waiting[at + 1 :] + waiting[:at]
        return waiting[0] if waiting else None
