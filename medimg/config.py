"""Typed configuration: ``params.yaml`` loaded once into pydantic models.

Library code receives these objects, never raw dictionaries. Every model forbids unknown keys, so
a typo in ``params.yaml`` fails at load time with the key, the value and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)

from medimg.errors import ConfigError
from medimg.metric_table import BOUNDABLE_METRICS

PositiveInt = Annotated[int, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


AUTO_IMAGE_SIZES = (16, 28, 32, 48, 64, 96, 128)
"""``base.image_size: auto`` takes the largest of these at or below the images' median shorter
side: a 28-pixel film stays 28 (nothing is upsampled that has no detail to give), a radiograph
of any larger size is brought down to 128. A fixed ladder, so a few new images of another size
never change the size a model takes."""


def auto_image_size(short_sides: list[int] | tuple[int, ...], smallest: int = 16) -> int:
    """The size ``base.image_size: auto`` means for images with these shorter sides; the
    largest size when there are none yet (before ingest). Never below ``smallest`` (16, or the
    32 pixels the keras.applications backbones need): films smaller than that are upsampled to
    it, the one case where auto upsamples."""
    if len(short_sides) == 0:
        return AUTO_IMAGE_SIZES[-1]
    median = sorted(short_sides)[len(short_sides) // 2]
    steps = [size for size in AUTO_IMAGE_SIZES if size >= smallest]
    return max([size for size in steps if size <= median] or [steps[0]])


SMALL_INPUT_MODELS = ("residual_cnn", "seed_cnn")
"""The architectures that take films under 32 pixels; keras.applications backbones need 32."""


def _image_size(value: object) -> int | str:
    """``base.image_size``: auto, or a whole number of pixels from 16 to 1024."""
    if value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("should be auto or a whole number of pixels from 16 to 1024")
    try:
        size = int(value)
    except ValueError:
        raise ValueError("should be auto or a whole number of pixels from 16 to 1024") from None
    if not 16 <= size <= 1024:
        raise ValueError("should be auto or from 16 to 1024 pixels")
    return size


class BaseConfig(_Section):
    seed: Annotated[int, Field(ge=0)] = 42
    # auto: from the ingested images' sizes (auto_image_size); Workspace.config resolves it
    image_size: Annotated[int | str, PlainValidator(_image_size)] = "auto"
    channels: Literal[1, 3] = 1
    class_names: list[str] = ["normal", "pneumonia"]

    @field_validator("class_names")
    @classmethod
    def _two_or_more_distinct(cls, names: list[str]) -> list[str]:
        if len(names) < 2:
            raise ValueError("needs at least two classes")
        if len(set(names)) != len(names):
            raise ValueError("class names must be distinct")
        if any(not n or "/" in n for n in names):
            raise ValueError("class names must be non-empty and contain no '/'")
        return names


class DataConfig(_Section):
    split_fractions: dict[Literal["train", "val", "test"], Annotated[float, Field(gt=0, lt=1)]] = {
        "train": 0.7,
        "val": 0.15,
        "test": 0.15,
    }
    min_side: PositiveInt = 28
    max_pixels: PositiveInt = 178_956_970
    min_std: Annotated[float, Field(ge=0.0)] = 1.0
    # perceptual-hash bits two near copies may differ in. By hash alone, 4 caught every resized
    # (3/4, 1/2) JPEG-75 copy of 256-512 px phantoms and 99.6% of those of 128 px ones, but also
    # a few distinct films; 6, confirmed with the thumbnail distance, caught them all and
    # nothing else
    near_duplicate_distance: Annotated[int, Field(ge=0, le=32)] = 6
    # largest thumbnail distance of a near copy: measured near copies (resized, JPEG 50-75,
    # blurred, gamma 0.8) reached 0.068; different films of one patient started at 0.086, of
    # different patients at 0.155
    near_duplicate_thumbnail_distance: Annotated[float, Field(ge=0.0, le=2.0)] = 0.08
    dedupe_across_splits: bool = False
    dicom_frame: Literal["first", "middle"] = "middle"
    allow_burned_in_annotation: bool = False
    workers: Annotated[int, Field(ge=0)] = 0
    metadata_columns: list[str] = []

    @field_validator("metadata_columns")
    @classmethod
    def _no_identifier_columns(cls, columns: list[str]) -> list[str]:
        from medimg.phi import is_identifier_column

        refused = [c for c in columns if is_identifier_column(c)]
        if refused:
            raise ValueError(
                f"column {refused[0]!r} names a direct patient identifier and is never kept; "
                "remove it from data.metadata_columns"
            )
        return columns

    @field_validator("split_fractions")
    @classmethod
    def _fractions_sum_to_one(cls, fractions: dict[str, float]) -> dict[str, float]:
        if set(fractions) != {"train", "val", "test"}:
            raise ValueError("needs exactly the keys train, val and test")
        if abs(sum(fractions.values()) - 1.0) > 1e-6:
            raise ValueError(f"fractions sum to {sum(fractions.values()):.3f}, must sum to 1")
        return fractions


Level = Literal["critical", "warning"]

CHECK_LEVELS: dict[str, Level] = {
    "columns_present": "critical",
    "manifest_not_empty": "critical",
    "required_values_present": "critical",
    "label_in_class_set": "critical",
    "split_in_allowed_set": "critical",
    "splits_non_empty": "critical",
    "class_counts_per_split": "critical",
    "class_balance": "warning",
    "width_in_bounds": "critical",
    "height_in_bounds": "critical",
    "channels_allowed": "critical",
    "bit_depth_allowed": "critical",
    "intensity_sane": "warning",
    "saturation_in_bounds": "warning",
    "no_exact_duplicate_across_splits": "critical",
    "no_near_duplicate_across_splits": "critical",
    "no_near_duplicate_within_split": "warning",
    "patient_in_one_split": "critical",
    "patient_ids_present": "warning",
    "quarantine_rate": "critical",
    "burned_in_annotation_known": "warning",
    "colour_matches_channels": "warning",
}
"""Every data-contract check and its default level; ``validation.levels`` overrides them."""


class ValidationConfig(_Section):
    min_images_per_class_per_split: PositiveInt = 1
    min_class_fraction: Fraction = 0.05
    min_side: PositiveInt = 28
    max_side: PositiveInt = 8192
    allowed_channels: list[Literal[1, 3, 4]] = [1, 3]
    allowed_bit_depths: list[Annotated[int, Field(ge=1, le=32)]] = [8, 10, 12, 14, 16]
    min_intensity_std: Annotated[float, Field(ge=0.0)] = 5.0
    max_saturated_fraction: Fraction = 0.25
    max_blank_fraction: Fraction = 0.5
    max_quarantine_fraction: Fraction = 0.05
    max_own_patient_fraction: Fraction = 0.0
    levels: dict[str, Level] = dict(CHECK_LEVELS)

    @field_validator("levels")
    @classmethod
    def _known_checks(cls, levels: dict[str, Level]) -> dict[str, Level]:
        unknown = sorted(set(levels) - set(CHECK_LEVELS))
        if unknown:
            raise ValueError(f"unknown check(s) {unknown}; known checks: {', '.join(CHECK_LEVELS)}")
        return {**CHECK_LEVELS, **levels}


class PreprocessConfig(_Section):
    contrast: Literal["clahe", "equalize", "none"] = "clahe"
    clahe_clip_limit: Annotated[float, Field(gt=0.0)] = 2.0
    clahe_tile_grid: PositiveInt = 8
    denoise: Literal["median", "gaussian", "none"] = "median"
    denoise_kernel: PositiveInt = 3

    @field_validator("denoise_kernel")
    @classmethod
    def _odd(cls, k: int) -> int:
        if k % 2 == 0:
            raise ValueError("must be odd (3, 5, 7, ...)")
        return k


class AugmentConfig(_Section):
    rotation_degrees: Annotated[float, Field(ge=0.0, le=180.0)] = 15.0
    width_shift: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    height_shift: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    shear: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    zoom: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    horizontal_flip: bool = False
    fill_mode: Literal["nearest", "constant", "reflect", "wrap"] = "nearest"


class FineTuneConfig(_Section):
    frozen_epochs: Annotated[int, Field(ge=0)] = 3
    learning_rate_factor: Annotated[float, Field(gt=0.0, le=1.0)] = 0.1
    # batch normalisation keeps its moving statistics after unfreezing too (Keras's guide)
    freeze_batchnorm: bool = True


class ModelConfig(_Section):
    architecture: Literal["residual_cnn", "seed_cnn", "resnet50", "densenet121",
                          "efficientnetb0"] = "residual_cnn"
    stages: Annotated[list[PositiveInt], Field(min_length=1, max_length=6)] = [32, 64, 128]
    filters: list[PositiveInt] = [32, 64]
    dense_units: PositiveInt = 128
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.5
    weights: str | None = None
    fine_tune: FineTuneConfig = FineTuneConfig()

    @field_validator("weights")
    @classmethod
    def _local_file_only(cls, weights: str | None) -> str | None:
        if weights is None or weights.strip().lower() in ("", "none", "null"):
            return None
        if weights.strip().lower() == "imagenet" or "://" in weights:
            raise ValueError(
                "medimg downloads nothing at run time; save the weights to a local file (for "
                "example keras.applications.ResNet50(weights='imagenet', include_top=False)"
                ".save_weights('resnet50.weights.h5') on a machine that may download) and set "
                "model.weights to its path"
            )
        return weights

    @model_validator(mode="after")
    def _weights_need_a_backbone(self) -> ModelConfig:
        if self.weights and self.architecture in SMALL_INPUT_MODELS:
            raise ValueError("model.weights applies to the backbones (resnet50, densenet121, "
                             f"efficientnetb0), not to {self.architecture}; set "
                             "model.weights: null")
        return self


class TrainConfig(_Section):
    epochs: PositiveInt = 30
    batch_size: PositiveInt = 32
    learning_rate: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.001
    shuffle_buffer: Annotated[int, Field(ge=0)] = 0
    early_stopping_patience: Annotated[int, Field(ge=0)] = 6
    restore_best_weights: bool = True
    loss: Literal["cross_entropy", "focal"] = "cross_entropy"
    focal_gamma: Annotated[float, Field(ge=0.0, le=10.0)] = 2.0
    class_weight: Literal["none", "balanced"] = "balanced"
    lr_schedule: Literal["plateau", "cosine", "constant"] = "cosine"
    lr_plateau_factor: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5
    lr_plateau_patience: Annotated[int, Field(ge=0)] = 2
    min_learning_rate: Annotated[float, Field(ge=0.0, lt=1.0)] = 1e-6
    checkpoint: bool = True
    resume: bool = True
    # auto: time a few steps in float32 and in the device's mixed policy, keep the faster
    mixed_precision: Literal["auto"] | bool = "auto"
    jit_compile: Literal["auto"] | bool = "auto"
    deterministic: bool = True
    # the operating point, chosen on the validation split after training (training.operating_point)
    threshold_method: Literal["target_recall", "youden", "max_f1", "fixed"] = "target_recall"
    target_recall: Annotated[float, Field(gt=0.0, le=1.0)] = 0.90
    threshold: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5
    # fitted on the validation split after training and stored in the bundle (medimg.calibration)
    calibration: Literal["platt", "temperature", "none"] = "platt"


class EvaluateConfig(_Section):
    bootstrap_resamples: Annotated[int, Field(ge=0, le=100_000)] = 1000
    slices: list[str] = Field(default_factory=list)
    # the disease classes the headline metrics and the gates are about (multi-class); two
    # classes always use the last one
    positive_classes: list[str] = Field(default_factory=list)
    confidence: Annotated[float, Field(gt=0.5, lt=1.0)] = 0.95
    # test cases per outcome (true/false positives/negatives) in the Grad-CAM grid; 0: no grid
    gradcam_cases: Annotated[int, Field(ge=0, le=16)] = 4
    # test-time augmentation: 0 (off) or the number of views averaged, the image itself and
    # warps drawn within the augment ranges the model trained on (never a flip augment forbids)
    tta: Annotated[int, Field(ge=0, le=64)] = 0


class GatesConfig(_Section):
    min_f1: Fraction = 0.80
    min_recall: Fraction = 0.85
    # further lower bounds, on any of BOUNDABLE_METRICS (higher is better for each)
    minimums: dict[str, Fraction] = Field(default_factory=dict)
    # bound the lower end of each metric's bootstrap interval, not its point estimate
    on_ci_lower_bound: bool = False
    noninferiority_margin: Fraction = 0.02
    # minimum evidence: test images of the disease class (each disease class) and of the rest
    min_test_positives: Annotated[int, Field(ge=0)] = 20
    min_test_negatives: Annotated[int, Field(ge=0)] = 20
    # also require the challenger to beat the champion on this metric before it is promoted
    superiority_metric: Literal[BOUNDABLE_METRICS] | None = None  # type: ignore[valid-type]

    @field_validator("minimums")
    @classmethod
    def _known_metrics(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(BOUNDABLE_METRICS))
        if unknown:
            raise ValueError(f"gates.minimums names {unknown}; bounds can be set on "
                             f"{', '.join(BOUNDABLE_METRICS)}")
        return value


class RegistryConfig(_Section):
    model_name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")] = (
        "medimg-classifier"
    )
    experiment_name: Annotated[str, Field(min_length=1)] = "medimg"


class DriftConfig(_Section):
    # population stability index above which a feature has drifted; 0.1-0.25 is the usual band
    # between "watch" and "act"
    psi_threshold: Annotated[float, Field(gt=0.0)] = 0.2
    # a two-sample test (KS or chi-square) below this p-value is drift too
    p_value: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.01
    # fewer images than this on either side gives no verdict at all
    min_samples: Annotated[int, Field(ge=2)] = 60
    # PSI bins of a numeric feature at most, cut at the reference's quantiles; a small batch
    # gets fewer (medimg.drift.stats.usable_bins)
    bins: Annotated[int, Field(ge=2, le=100)] = 10


class RetrainConfig(_Section):
    # new or corrected labels since the champion's data version that start a retrain
    min_new_labels: PositiveInt = 50
    # a feature that drifted (see drift) starts a retrain too
    on_drift: bool = True
    # start training from the champion's weights when its architecture and input match
    warm_start: bool = False
    # when the scheduled retrain deployment checks the triggers: five cron fields
    schedule: Annotated[str, Field(pattern=r"^\s*\S+(\s+\S+){4}\s*$")] = "0 2 * * *"
    timezone: Annotated[str, Field(min_length=1)] = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. UTC, "
                             "Europe/Berlin)") from None
        return value


class ServeConfig(_Section):
    """``medimg serve``: the review app, and ``medimg predict``'s batches."""

    host: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8765
    # an upload larger than this is refused while it streams in, before it is spooled
    max_upload_mb: Annotated[float, Field(gt=0, le=2048)] = 32.0
    # reads (predictions, heat maps, worklist, model) open to anyone who can reach the port
    anonymous_reads: bool = False
    # how often the app asks the registry where the champion alias points
    model_poll_seconds: Annotated[float, Field(ge=0)] = 10.0
    # images per forward pass in `medimg predict`
    batch_size: PositiveInt = 32
    # how long a page session lasts
    session_hours: Annotated[float, Field(gt=0, le=24 * 30)] = 12.0

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class Config(_Section):
    """The whole of ``params.yaml``."""

    base: BaseConfig = BaseConfig()
    data: DataConfig = DataConfig()
    validation: ValidationConfig = ValidationConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    augment: AugmentConfig = AugmentConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    gates: GatesConfig = GatesConfig()
    registry: RegistryConfig = RegistryConfig()
    drift: DriftConfig = DriftConfig()
    retrain: RetrainConfig = RetrainConfig()
    serve: ServeConfig = ServeConfig()

    @model_validator(mode="after")
    def _sides_consistent(self) -> Config:
        size = self.base.image_size
        if (isinstance(size, int) and size < 32
                and self.model.architecture not in SMALL_INPUT_MODELS):
            raise ValueError(f"base.image_size {size} is below the 32 pixels "
                             f"{self.model.architecture} takes; set 32 or more, or auto")
        names = list(self.base.class_names)
        unknown = [c for c in self.evaluate.positive_classes if c not in names]
        if unknown:
            raise ValueError(f"evaluate.positive_classes names {unknown}, not in "
                             f"base.class_names {names}")
        if len(names) == 2 and self.evaluate.positive_classes not in ([], [names[-1]]):
            raise ValueError(f"with two classes the positive one is the last of "
                             f"base.class_names ({names[-1]!r}); reorder base.class_names "
                             "instead of setting evaluate.positive_classes")
        if self.gates.on_ci_lower_bound and self.evaluate.bootstrap_resamples == 0:
            raise ValueError("gates.on_ci_lower_bound needs confidence intervals, but "
                             "evaluate.bootstrap_resamples is 0; set it to 1000 or turn the "
                             "option off")
        if self.validation.min_side > self.validation.max_side:
            raise ValueError(
                f"validation.min_side {self.validation.min_side} exceeds "
                f"validation.max_side {self.validation.max_side}"
            )
        if (self.train.lr_schedule == "cosine"
                and self.train.min_learning_rate >= self.train.learning_rate):
            raise ValueError(
                f"train.min_learning_rate {self.train.min_learning_rate} is not below "
                f"train.learning_rate {self.train.learning_rate}, so the cosine schedule would "
                "not decay")
        return self

    def with_image_size(self, size: int) -> Config:
        """This config with ``base.image_size`` set (how ``auto`` is resolved)."""
        return self.model_copy(update={"base": self.base.model_copy(update={"image_size": size})})

    def flat(self) -> dict[str, Any]:
        """Dotted keys to values, as MLflow params (``train.epochs`` -> 12)."""
        return _flatten(self.model_dump(mode="json"))

    def digest(self) -> str:
        """A stable hash of every value, for lineage tags."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def digest_of(config: Config, keys: tuple[str, ...]) -> str:
    """A stable hash of some params only (``("base", "data.max_pixels")``): what an output
    depends on, so a change elsewhere in params.yaml leaves it, and its stage, alone."""
    values: dict[str, Any] = {}
    for key in keys:
        value: Any = config
        for part in key.split("."):
            value = getattr(value, part)
        values[key] = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and key not in ("split_fractions", "levels"):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


# keys an earlier version read from another place: an old params.yaml is told where they went
MOVED_KEYS = {
    "evaluate.threshold_method": "train.threshold_method",
    "evaluate.target_recall": "train.target_recall",
    "evaluate.threshold": "train.threshold",
}


def _describe(error: dict[str, Any]) -> str:
    """One readable line for one pydantic error: key, value, what is allowed."""
    loc = [str(p) for p in error["loc"]]
    key = ".".join(loc) or "(top level)"
    if error["type"] == "extra_forbidden" and key in MOVED_KEYS:
        return (f"'{key}' has moved to '{MOVED_KEYS[key]}' (the train stage chooses the "
                "operating point); move it there")
    if error["type"] == "extra_forbidden":
        model: type[BaseModel] = Config
        for part in loc[:-1]:
            field = model.model_fields.get(part)
            annotation = getattr(field, "annotation", None)
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                model = annotation
        allowed = ", ".join(model.model_fields)
        return f"unknown key '{key}'; allowed keys here: {allowed}"
    value = error.get("input")
    message = error["msg"].removeprefix("Value error, ")
    if not loc:  # a rule across sections: its message names the keys, the whole file would not
        return message
    return f"{key} = {value!r}: {message}"


def parse_config(raw: dict[str, Any] | None, source: str = "params.yaml") -> Config:
    """Validate a parsed ``params.yaml`` mapping.

    Raises:
        ConfigError: naming every bad key, its value and what is allowed.
    """
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must be a mapping of sections, got {type(raw).__name__}")
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise ConfigError(f"{source}: {problems}") from None


def load_config(path: Path) -> Config:
    """Load and validate ``params.yaml``.

    Raises:
        ConfigError: when the file is missing, is not YAML, or holds a bad key or value.
    """
    if not path.is_file():
        raise ConfigError(f"{path} not found; run `medimg init DIR` to create a workspace")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{where}; fix the syntax") from None
    return parse_config(raw, source=str(path.name))
