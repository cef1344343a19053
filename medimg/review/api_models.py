"""The JSON the review API sends and takes; FastAPI draws its OpenAPI schema from these."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from medimg.feedback.log import FeedbackEntry
from medimg.feedback.predictions import Prediction, WorkItem


class ErrorOut(BaseModel):
    detail: str = Field(description="What went wrong and what to do, in one line.")


class UncertaintyOut(BaseModel):
    entropy: float = Field(description="Entropy over log(classes): 0 certain, 1 uniform.")
    distance: float = Field(description="Distance to the decision: 0 is a coin toss.")


class PredictionOut(BaseModel):
    prediction_id: str
    image_id: str = Field(description="sha256 of the pixels-only image kept for review.")
    label: str
    probabilities: dict[str, float]
    decision_rule: str = Field(description="'threshold' (two classes) or 'argmax'.")
    threshold: float | None
    model_name: str
    model_version: str
    uncertainty: UncertaintyOut
    time: str
    heatmap_url: str

    @classmethod
    def of(cls, p: Prediction) -> PredictionOut:
        return cls(
            prediction_id=p.prediction_id,
            image_id=p.image_id,
            label=p.predicted_label,
            probabilities=dict(zip(p.class_names, p.probabilities, strict=True)),
            decision_rule=p.decision_rule,
            threshold=p.threshold,
            model_name=p.model_name,
            model_version=p.model_version,
            uncertainty=UncertaintyOut(entropy=p.entropy, distance=p.distance),
            time=p.time,
            heatmap_url=f"/predictions/{p.prediction_id}/heatmap",
        )


class WorkItemOut(PredictionOut):
    reviewed: bool
    reviewers: list[str]

    @classmethod
    def of_item(cls, item: WorkItem) -> WorkItemOut:
        return cls(
            **PredictionOut.of(item.prediction).model_dump(),
            reviewed=item.reviewed,
            reviewers=list(item.reviewers),
        )


class WorklistOut(BaseModel):
    items: list[WorkItemOut]


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prediction_id: str = Field(min_length=1, max_length=64)
    label: str = Field(
        min_length=1,
        max_length=128,
        description="The reviewer's label: the predicted one confirms, another corrects.",
    )
    note: str | None = Field(None, max_length=2000)


class FeedbackOut(BaseModel):
    entry_id: str
    prediction_id: str | None
    image_id: str
    label: str | None
    previous_label: str | None
    agree: bool | None
    status: str = Field(description="agreed, applied, or pending (waits for adjudication).")
    reviewer: str
    time: str

    @classmethod
    def of(cls, e: FeedbackEntry) -> FeedbackOut:
        return cls(
            entry_id=e.entry_id,
            prediction_id=e.prediction_id,
            image_id=e.image_id,
            label=e.label,
            previous_label=e.previous_label,
            agree=e.agree,
            status=e.status or "",
            reviewer=e.reviewer,
            time=e.time,
        )


class MetricOut(BaseModel):
    value: float | None
    ci_low: float | None
    ci_high: float | None


class ModelOut(BaseModel):
    name: str
    version: str
    alias: str | None
    uri: str
    class_names: list[str]
    decision_rule: str
    threshold: float | None
    test_metrics: dict[str, MetricOut]


class HealthOut(BaseModel):
    status: str
    model_version: str | None
    detail: str | None = None
