"""Predictions made for review, with the model's uncertainty, and the worklist they make.

Every prediction medimg makes for review (``medimg predict --for-review``, the review app) is
appended to ``data/feedback/predictions.jsonl`` by :func:`record_predictions`. An image is named
by its sha256 content hash only, never by a file name. :func:`worklist` lists the predictions no
reviewer has labelled yet, most uncertain first (nearest the decision, then highest entropy), so
reviewers label what teaches the model most, as MONAI Label orders its active learning.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from medimg.decision import ARGMAX, THRESHOLD
from medimg.errors import DataError
from medimg.feedback.log import (
    LOCK,
    FeedbackEntry,
    append_records,
    new_entry_id,
    read_log,
    read_records,
    utc_now,
)
from medimg.locks import workspace_lock
from medimg.workspace import Workspace

CONTENT_HASH = re.compile(r"[0-9a-f]{64}")
"""An image id: the sha256 of its content, as 64 lowercase hex digits (use ``fullmatch``)."""
_SUM_TOLERANCE = 1e-3  # float32 softmax outputs sum to 1 within far less


@dataclass(frozen=True)
class Uncertainty:
    """How unsure a prediction is; both are 0..1."""

    entropy: float
    """Entropy of the class probabilities over log(number of classes): 0 certain, 1 uniform."""
    distance: float
    """Distance to the decision: two classes, |P(positive) - threshold|; more, the top
    probability minus the second. 0 is a coin toss."""


def uncertainty(probabilities: Sequence[float], threshold: float | None = None) -> Uncertainty:
    """The uncertainty of one prediction's class probabilities (the positive class last).

    Args:
        probabilities: One probability per class, summing to 1.
        threshold: The decision threshold on the positive class; needed for two classes only.
    """
    n = len(probabilities)
    if n < 2:
        raise ValueError(f"{n} class probabilities; give one per class, two or more")
    entropy = -sum(p * math.log(p) for p in probabilities if p > 0) / math.log(n)
    if n == 2:
        if threshold is None:
            raise ValueError("two classes are decided by a threshold; pass the model's threshold")
        distance = abs(probabilities[1] - threshold)
    else:
        first, second = sorted(probabilities, reverse=True)[:2]
        distance = first - second
    return Uncertainty(entropy=min(max(entropy, 0.0), 1.0), distance=float(distance))


@dataclass(frozen=True)
class Prediction:
    """One line of ``predictions.jsonl``: what a model said about an image, and how unsure."""

    prediction_id: str
    image_id: str  # the image's sha256 content hash
    time: str  # ISO 8601, UTC
    model_name: str
    model_version: str
    class_names: list[str]
    probabilities: list[float]  # in the order of class_names
    decision_rule: str  # threshold (two classes) or argmax
    predicted_label: str
    entropy: float
    distance: float
    threshold: float | None = None  # two classes only


def new_prediction(image_id: str, probabilities: Sequence[float], class_names: Sequence[str],
                   model_name: str, model_version: str | int,
                   threshold: float | None = None) -> Prediction:
    """A prediction record, with its decision and uncertainty, ready for
    :func:`record_predictions`.

    Args:
        image_id: The image's sha256 content hash (as the manifest's ``image_id``).
        probabilities: The model's probability per class, in the order of ``class_names``.
        class_names: The model's classes; with two, the last is the positive class.
        model_name: The registered model's name.
        model_version: Its version.
        threshold: The model's decision threshold on the positive class (two classes only; it
            is not recorded for more, which are decided by arg-max).

    Raises:
        DataError: the image id is not a content hash, or the probabilities do not fit.
    """
    if not CONTENT_HASH.fullmatch(image_id):
        raise DataError("a prediction names its image by the sha256 of its content (64 hex "
                        "digits), never by a file name or any other identifier")
    probs = [float(p) for p in probabilities]
    if len(probs) != len(class_names) or len(probs) < 2:
        raise DataError(f"{len(probs)} probabilities for {len(class_names)} classes "
                        f"{list(class_names)}; give one per class")
    if not all(0 <= p <= 1 for p in probs) or abs(sum(probs) - 1) > _SUM_TOLERANCE:
        raise DataError(f"probabilities {probs} are not a distribution; give the model's "
                        "softmax output, one probability per class, summing to 1")
    binary = len(probs) == 2
    if binary and (threshold is None or not 0 < threshold < 1):
        raise DataError(f"threshold {threshold} must be between 0 and 1; two classes are "
                        "decided by the model's threshold on the positive class")
    index = int(probs[1] >= threshold) if binary else probs.index(max(probs))
    measured = uncertainty(probs, threshold)
    return Prediction(
        prediction_id=new_entry_id(), image_id=image_id, time=utc_now(),
        model_name=model_name, model_version=str(model_version),
        class_names=list(class_names), probabilities=probs,
        decision_rule=THRESHOLD if binary else ARGMAX, predicted_label=class_names[index],
        entropy=measured.entropy, distance=measured.distance,
        threshold=float(threshold) if binary and threshold is not None else None)


def predictions_path(ws: Workspace) -> Path:
    return ws.root / "data" / "feedback" / "predictions.jsonl"


def record_predictions(ws: Workspace, records: Sequence[Prediction]) -> None:
    """Append ``records`` (from :func:`new_prediction`), on disk before returning."""
    for record in records:
        if not CONTENT_HASH.fullmatch(record.image_id):
            raise DataError(f"prediction {record.prediction_id} does not name its image by "
                            "content hash; make records with new_prediction")
    with workspace_lock(ws.root, LOCK):
        append_records(predictions_path(ws), records)


def read_predictions(ws: Workspace) -> list[Prediction]:
    """Every prediction recorded for review, oldest first."""
    return read_records(ws, predictions_path(ws), Prediction, "prediction")


def find_prediction(ws: Workspace, prediction_id: str) -> Prediction:
    """The prediction recorded as ``prediction_id``.

    Raises:
        DataError: no prediction has that id.
    """
    for prediction in read_predictions(ws):
        if prediction.prediction_id == prediction_id:
            return prediction
    raise DataError(f"no prediction {prediction_id!r} was recorded for review; see "
                    "`medimg feedback worklist --all`")


@dataclass(frozen=True)
class WorkItem:
    """A prediction on the worklist, and who has reviewed its image since (none: waiting)."""

    prediction: Prediction
    reviewers: tuple[str, ...] = ()

    @property
    def reviewed(self) -> bool:
        return bool(self.reviewers)

    def line(self) -> str:
        p = self.prediction
        done = f"; reviewed by {', '.join(self.reviewers)}" if self.reviewers else ""
        return (f"{p.prediction_id} {p.image_id[:12]} {p.predicted_label} by "
                f"{p.model_name} v{p.model_version}: distance {p.distance:.3f}, entropy "
                f"{p.entropy:.3f}{done}")


def worklist(ws: Workspace, include_reviewed: bool = False) -> list[WorkItem]:
    """Predictions waiting for a reviewer, most uncertain first: the smallest distance to the
    decision first, ties broken by the higher entropy, then the older prediction.

    A prediction counts as reviewed once a label entry names it, or names its image and was
    recorded after it.

    Args:
        include_reviewed: List reviewed predictions too, each with its reviewers.
    """
    with workspace_lock(ws.root, LOCK):  # a line being appended is never read half-written
        predictions = read_predictions(ws)
        labels = [e for e in read_log(ws) if e.kind == "label"]
    items = [WorkItem(p, _reviewers(p, labels)) for p in predictions]
    if not include_reviewed:
        items = [item for item in items if not item.reviewed]
    return sorted(items, key=lambda item: (item.prediction.distance, -item.prediction.entropy,
                                           _when(item.prediction.time)))


def _reviewers(prediction: Prediction, labels: list[FeedbackEntry]) -> tuple[str, ...]:
    made = _when(prediction.time)
    named = (e.reviewer for e in labels if e.prediction_id == prediction.prediction_id
             or (e.image_id == prediction.image_id and _when(e.time) >= made))
    return tuple(dict.fromkeys(named))


def _when(time: str) -> datetime:
    return datetime.fromisoformat(time)
