"""The architectures: shapes and probabilities, local weights, saving, mixed precision."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from medimg.config import ModelConfig, parse_config
from medimg.errors import ConfigError
from medimg.layers import BACKBONE, InputAdapter, backbone_of
from medimg.training.models import (
    batchnorm_layers,
    build_model,
    resolve_weights,
    set_backbone_trainable,
    stem_downsamples,
    wrap_backbone,
)

SIZE = 32
BACKBONES = ["resnet50", "densenet121", "efficientnetb0"]


def images(n: int, channels: int, seed: int = 0) -> np.ndarray:
    """uint8-range floats, what every model is fed."""
    return (np.random.default_rng(seed).random((n, SIZE, SIZE, channels)) * 255).astype(
        np.float32)


def predict(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(x, training=False))


@pytest.fixture
def dtype_policy(request: pytest.FixtureRequest):
    """Set a global Keras dtype policy for one test, and always put float32 back."""
    keras.config.set_dtype_policy(request.param)
    try:
        yield request.param
    finally:
        keras.config.set_dtype_policy("float32")


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("architecture", ["seed_cnn", "residual_cnn", *BACKBONES])
def test_each_architecture_builds_with_1_and_3_channels_at_a_small_size(
    architecture: str, channels: int
):
    model = build_model(SIZE, channels, 2, ModelConfig(architecture=architecture,
                                                       dense_units=16))
    assert model.input_shape == (None, SIZE, SIZE, channels)
    out = predict(model, images(3, channels))
    assert out.shape == (3, 1)  # two classes: the positive class's probability
    assert out.dtype == np.float32
    assert np.all((out >= 0) & (out <= 1)) and np.all(np.isfinite(out))
    if architecture == "seed_cnn":
        assert backbone_of(model) is None
    else:
        backbone = backbone_of(model)
        assert backbone is not None and backbone.name == "backbone"
        # without weights the backbone takes the images' own channels
        assert backbone.input_shape[-1] == channels


@pytest.mark.parametrize("architecture", ["seed_cnn", "residual_cnn", "efficientnetb0"])
def test_three_classes_get_a_softmax_over_classes(architecture: str):
    model = build_model(SIZE, 1, 3, ModelConfig(architecture=architecture, dense_units=16))
    out = predict(model, images(4, 1))
    assert out.shape == (4, 3)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    assert np.all(out >= 0)


@pytest.fixture(scope="module")
def resnet_rgb() -> keras.Model:
    """One ResNet50 without weights on RGB, shared by the tests that only read it."""
    return build_model(SIZE, 3, 2, ModelConfig(architecture="resnet50"))


def test_a_backbone_model_saves_and_reloads_with_the_same_predictions(
    resnet_rgb: keras.Model, tmp_path: Path
):
    path = tmp_path / "model.keras"
    resnet_rgb.save(path)
    loaded = keras.saving.load_model(path)  # safe mode: no Lambda layers to refuse
    x = images(4, 3, seed=1)
    np.testing.assert_allclose(predict(loaded, x), predict(resnet_rgb, x), rtol=1e-5, atol=1e-6)
    assert isinstance(loaded.get_layer("input_adapter"), InputAdapter)
    assert backbone_of(loaded) is not None  # fine-tuning can still find it


def test_local_weights_load_into_the_backbone_and_greyscale_is_repeated_to_rgb(
    resnet_rgb: keras.Model, tmp_path: Path
):
    source = backbone_of(resnet_rgb)
    weights = tmp_path / "b.weights.h5"
    source.save_weights(weights)

    grey = build_model(SIZE, 1, 2, ModelConfig(architecture="resnet50"), weights=weights)
    assert grey.input_shape == (None, SIZE, SIZE, 1)
    assert backbone_of(grey).input_shape[-1] == 3  # the trained RGB first convolution is kept
    for got, saved in zip(backbone_of(grey).get_weights(), source.get_weights(), strict=True):
        np.testing.assert_array_equal(got, saved)

    # a grey image gives what the RGB model gives for that image copied into R, G and B
    grey.get_layer("probability").set_weights(resnet_rgb.get_layer("probability").get_weights())
    x = images(3, 1, seed=2)
    np.testing.assert_allclose(predict(grey, x), predict(resnet_rgb, np.repeat(x, 3, axis=-1)),
                               rtol=1e-5, atol=1e-6)


def test_resolve_weights_finds_files_relative_to_the_workspace(tmp_path: Path):
    (tmp_path / "weights").mkdir()
    file = tmp_path / "weights" / "b.weights.h5"
    file.write_bytes(b"not read here")
    assert resolve_weights(None, tmp_path) is None
    assert resolve_weights("weights/b.weights.h5", tmp_path) == file
    assert resolve_weights(str(file), Path("/elsewhere")) == file


def test_a_missing_weights_file_is_a_config_error_naming_it(tmp_path: Path):
    with pytest.raises(ConfigError) as info:
        resolve_weights("weights/missing.weights.h5", tmp_path)
    message = str(info.value)
    assert "weights/missing.weights.h5" in message
    assert "downloads nothing" in message and "model.weights" in message


@pytest.mark.parametrize("value", ["imagenet", "ImageNet", "https://example.org/r50.h5"])
def test_config_refuses_weights_that_would_be_downloaded(value: str):
    with pytest.raises(ConfigError) as info:
        parse_config({"model": {"architecture": "resnet50", "weights": value}})
    assert "downloads nothing" in str(info.value)
    assert "model.weights" in str(info.value)


def test_config_refuses_weights_for_the_seed_cnn():
    with pytest.raises(ConfigError) as info:
        parse_config({"model": {"architecture": "seed_cnn", "weights": "w.weights.h5"}})
    assert "seed_cnn" in str(info.value)


@pytest.mark.parametrize("value", ["", "none", "null", None])
def test_config_reads_empty_weights_as_none(value: str | None):
    config = parse_config({"model": {"architecture": "resnet50", "weights": value}})
    assert config.model.weights is None


@pytest.mark.parametrize(("dtype_policy", "low"), [("mixed_float16", "float16"),
                                                   ("mixed_bfloat16", "bfloat16")],
                         indirect=["dtype_policy"])
@pytest.mark.parametrize("architecture", ["seed_cnn", "residual_cnn", "resnet50"])
def test_under_mixed_precision_layers_compute_low_and_the_output_is_float32(
    dtype_policy: str, low: str, architecture: str
):
    model = build_model(SIZE, 1, 2, ModelConfig(architecture=architecture, dense_units=16))
    inner = backbone_of(model) or model
    convs = [layer for layer in inner.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(layer.compute_dtype == low for layer in convs)
    assert all(layer.variable_dtype == "float32" for layer in convs)  # float32 master weights
    assert model.get_layer("probability").compute_dtype == "float32"
    out = model(images(2, 1), training=False)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(out)))


@pytest.mark.parametrize("dtype_policy", ["mixed_float16"], indirect=True)
def test_float16_training_gets_loss_scaling_and_trains(dtype_policy: str):
    model = build_model(SIZE, 1, 2, ModelConfig(architecture="seed_cnn", dense_units=16))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    x = images(16, 1, seed=3)
    y = (np.arange(16) % 2).astype(np.float32)[:, None]
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


@pytest.mark.parametrize("dtype_policy", ["mixed_bfloat16"], indirect=True)
def test_bfloat16_needs_no_loss_scaling(dtype_policy: str):
    model = build_model(SIZE, 1, 2, ModelConfig(architecture="seed_cnn", dense_units=16))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    assert not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)



def test_efficientnet_with_imagenet_style_weights_gets_the_input_scaling_keras_gives_them(
        tmp_path):
    """Keras adds Rescaling(1/sqrt(std)) to EfficientNet only for weights="imagenet"; a weights
    file cannot carry it, so medimg folds it into the input adapter."""
    std = np.array([0.229, 0.224, 0.225])
    mean = np.array([0.485, 0.456, 0.406])
    source = keras.applications.EfficientNetB0(
        include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg")
    norm = next(x for x in source.layers if isinstance(x, keras.layers.Normalization))
    norm.adapt_mean.assign(mean)
    norm.adapt_variance.assign(std**2)
    norm.finalize_state()
    path = tmp_path / "b0.weights.h5"
    source.save_weights(path)
    model = build_model(32, 3, 2, ModelConfig(architecture="efficientnetb0", weights=str(path)),
                        weights=path)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    keras_imagenet_stem = keras.Sequential([
        keras.layers.Rescaling(1 / 255),
        keras.layers.Normalization(mean=mean, variance=std**2),
        keras.layers.Rescaling([1 / np.sqrt(s) for s in std]),
    ])
    backbone = backbone_of(model)
    ours = keras.Sequential(backbone.layers[1:3])(model.get_layer("input_adapter")(x))
    assert np.allclose(np.asarray(ours), np.asarray(keras_imagenet_stem(x)), atol=1e-4)


# Batch normalisation in fine-tuning. Keras 3 passes fit's training=True down to the nested
# backbone whatever it was called with, so only trainable=False keeps its statistics fixed.

TINY = 16


def tiny_backbone_model() -> keras.Model:
    """A backbone shaped like keras.applications' (convolutions with batch normalisation, one
    block nested, average pooled), wrapped as medimg wraps the real ones; fast on a CPU."""
    inputs = keras.Input((TINY, TINY, 1))
    x = keras.layers.Conv2D(4, 3, use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("relu")(x)
    block = keras.Sequential([keras.layers.Conv2D(8, 3, use_bias=False),
                              keras.layers.BatchNormalization(),
                              keras.layers.Activation("relu")], name="block")
    x = keras.layers.GlobalAveragePooling2D()(block(x))
    backbone = keras.Model(inputs, x, name=BACKBONE)
    return wrap_backbone(backbone, channels=1, n_classes=2, dropout=0.2,
                         adapter=InputAdapter(mean=[127.5] * 3, std=[64.0] * 3,
                                              name="input_adapter"))


def fit_one_epoch(model: keras.Model, trainable: bool, freeze_batchnorm: bool) -> None:
    """One epoch on 8 tiny images, after freezing as training's phase does."""
    set_backbone_trainable(model, trainable, freeze_batchnorm)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    x = (np.random.default_rng(4).random((8, TINY, TINY, 1)) * 255).astype(np.float32)
    y = (np.arange(8) % 2).astype(np.float32)[:, None]
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)


def statistics(model: keras.Model) -> dict[str, np.ndarray]:
    """The moving mean and variance of every batch normalisation layer in the backbone."""
    layers = batchnorm_layers(backbone_of(model))
    assert len(layers) == 2, "the nested block's layer must be found too"
    return {f"{layer.path}/{v.name}": keras.ops.convert_to_numpy(v).copy()
            for layer in layers for v in (layer.moving_mean, layer.moving_variance)}


def other_backbone_weights(model: keras.Model) -> list[np.ndarray]:
    """The backbone's weights that are not batch normalisation (here, convolution kernels)."""
    backbone = backbone_of(model)
    bn = {id(v) for layer in batchnorm_layers(backbone) for v in layer.weights}
    return [keras.ops.convert_to_numpy(v).copy() for v in backbone.weights if id(v) not in bn]


def changed(before, after) -> list[bool]:
    if isinstance(before, dict):
        before, after = list(before.values()), list(after.values())
    return [not np.array_equal(a, b) for a, b in zip(before, after, strict=True)]


@pytest.mark.parametrize("freeze_batchnorm", [True, False])
def test_a_frozen_backbone_keeps_its_weights_and_batch_norm_statistics(freeze_batchnorm: bool):
    model = tiny_backbone_model()
    stats, kernels = statistics(model), other_backbone_weights(model)
    head = model.get_layer("probability").get_weights()
    fit_one_epoch(model, trainable=False, freeze_batchnorm=freeze_batchnorm)
    assert not any(changed(stats, statistics(model)))
    assert not any(changed(kernels, other_backbone_weights(model)))
    assert all(changed(head, model.get_layer("probability").get_weights()))  # the head learns


def test_fine_tuning_with_frozen_batch_norm_keeps_its_statistics_and_trains_the_rest():
    model = tiny_backbone_model()
    stats, kernels = statistics(model), other_backbone_weights(model)
    fit_one_epoch(model, trainable=True, freeze_batchnorm=True)
    assert not any(changed(stats, statistics(model)))
    assert all(changed(kernels, other_backbone_weights(model)))


def test_fine_tuning_without_frozen_batch_norm_updates_its_statistics():
    model = tiny_backbone_model()
    stats, kernels = statistics(model), other_backbone_weights(model)
    fit_one_epoch(model, trainable=True, freeze_batchnorm=False)
    assert all(changed(stats, statistics(model)))
    assert all(changed(kernels, other_backbone_weights(model)))


def test_a_model_fine_tuned_with_frozen_batch_norm_saves_and_reloads_as_a_bundle(
    tmp_path: Path
):
    from medimg.bundle import BundleMeta, ModelBundle
    from medimg.config import PreprocessConfig

    model = tiny_backbone_model()
    fit_one_epoch(model, trainable=True, freeze_batchnorm=True)
    meta = BundleMeta(class_names=["normal", "disease"], image_size=TINY, channels=1,
                      preprocess=PreprocessConfig().model_dump(mode="json"))
    ModelBundle(model, meta).save(tmp_path / "model")
    loaded = ModelBundle.load(tmp_path / "model")
    x = (np.random.default_rng(5).random((4, TINY, TINY, 1)) * 255).astype(np.uint8)
    np.testing.assert_allclose(loaded.predict_packed(x), ModelBundle(model, meta).predict_packed(x),
                               rtol=1e-5, atol=1e-6)
    assert not any(changed(statistics(model), statistics(loaded.model)))


@pytest.mark.parametrize("architecture", BACKBONES)
def test_every_batch_norm_of_each_real_backbone_is_left_out_of_fine_tuning(architecture: str):
    model = build_model(SIZE, 1, 2, ModelConfig(architecture=architecture))
    layers = batchnorm_layers(backbone_of(model))
    assert layers  # each keras.applications backbone normalises its batches
    bn_ids = {id(v) for layer in layers for v in layer.weights}

    set_backbone_trainable(model, True, freeze_batchnorm=True)
    trainable = {id(v) for v in model.trainable_weights}
    assert not bn_ids & trainable
    assert all(not layer.trainable for layer in layers)
    convs = [layer for layer in backbone_of(model).layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(id(layer.kernel) in trainable for layer in convs)

    set_backbone_trainable(model, True, freeze_batchnorm=False)  # and back: it trains again
    scales = {id(layer.gamma) for layer in layers if layer.gamma is not None}
    assert scales and scales <= {id(v) for v in model.trainable_weights}


@pytest.mark.parametrize(("size", "steps", "feature_side"),
                         [(28, 0, 7), (32, 0, 8), (64, 1, 8), (128, 2, 8), (224, 2, 14),
                          (512, 4, 8)])
def test_the_residual_cnn_keeps_small_films_at_full_resolution(size: int, steps: int,
                                                               feature_side: int):
    """No stride in the stem for a 28-pixel film; large films are brought near 32 pixels
    before the residual stages, so the cost per image stays small at any size."""
    assert stem_downsamples(size) == steps
    trunk = backbone_of(build_model(size, 1, 2, ModelConfig(architecture="residual_cnn")))
    feature_map = trunk.layers[-2].output.shape
    assert feature_map[1:3] == (feature_side, feature_side)
    assert feature_map[3] == ModelConfig().stages[-1]


def test_the_residual_cnn_is_small_and_normalises_its_batches():
    model = build_model(28, 1, 2, ModelConfig(architecture="residual_cnn"))
    seed_at_128 = build_model(128, 1, 2, ModelConfig(architecture="seed_cnn"))
    assert batchnorm_layers(backbone_of(model))
    assert model.count_params() < 400_000 < seed_at_128.count_params()
    assert isinstance(backbone_of(model).layers[-1], keras.layers.GlobalAveragePooling2D)


def test_the_seed_cnn_has_no_backbone_to_freeze():
    model = build_model(SIZE, 1, 2, ModelConfig(architecture="seed_cnn", dense_units=16))
    before = len(model.trainable_weights)
    set_backbone_trainable(model, False, freeze_batchnorm=True)
    assert len(model.trainable_weights) == before > 0


def test_a_backbone_not_named_backbone_is_refused_by_name():
    inputs = keras.Input((TINY, TINY, 1))
    other = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs), name="resnet")
    with pytest.raises(ValueError, match=r"'resnet'.*'backbone'"):
        wrap_backbone(other, channels=1, n_classes=2, dropout=0.0)
