"""One pixel bound, ``data.max_pixels``, at ingest, preprocess and the served model's decoder;
a refusal anywhere is one line, never a traceback."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import medimg_cli, write_params
from PIL import Image
from support.ingesting import ingest
from support.large_images import PILLOW_DEFAULT_GUARD, write_striped_png

from medimg.bundle import BundleMeta, ModelBundle
from medimg.config import parse_config
from medimg.data.images import DEFAULT_MAX_PIXELS, TooManyPixels, decode_image
from medimg.data.manifest import load_manifest
from medimg.data.packed import load_split
from medimg.errors import DataError
from medimg.preprocessing.stage import run_preprocess
from medimg.serving import pyfunc
from medimg.training.models import build_model
from medimg.workspace import open_workspace


def _source(root: Path, per_class: int = 4, size: int = 48) -> Path:
    """``root/normal`` and ``root/pneumonia``, each with ``per_class`` distinct noise PNGs."""
    for label, offset in (("normal", 0), ("pneumonia", 100)):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rng = np.random.default_rng(offset + i)
            pixels = rng.integers(0, 255, (size, size), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{label}{i}.png")
    return root


def _served(bundle_dir: Path, images: list[bytes]) -> pd.DataFrame:
    """What the registered model answers for these encoded files: the bundle logged to a real
    SQLite MLflow store as publish logs it, loaded back as a client loads it."""
    import mlflow

    root = bundle_dir.parent / f"{bundle_dir.name}-mlflow"
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    try:
        root.mkdir(exist_ok=True)
        found = mlflow.get_experiment_by_name(bundle_dir.name)
        experiment = found.experiment_id if found else mlflow.create_experiment(
            bundle_dir.name, artifact_location=(root / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            uri = mlflow.pyfunc.log_model(
                name="model", python_model=Path(pyfunc.__file__).with_name("mlflow_model.py"),
                artifacts={pyfunc.BUNDLE_ARTIFACT: str(bundle_dir)},
                model_config=pyfunc.MODEL_CONFIG, pip_requirements=["mlflow"]).model_uri
        model = mlflow.pyfunc.load_model(uri)
        frame = pd.DataFrame({"image": [base64.b64encode(b).decode("ascii") for b in images]})
        return model.predict(frame)
    finally:
        mlflow.set_tracking_uri(None)


def test_an_image_between_pillows_default_and_data_max_pixels_goes_through_every_stage(
    make_workspace, tmp_path
):
    ws = make_workspace(with_data=False)
    assert ws.config.data.max_pixels == DEFAULT_MAX_PIXELS
    src = _source(tmp_path / "src")
    width, height = 9_000, 10_000  # 90 million pixels
    assert PILLOW_DEFAULT_GUARD < width * height <= DEFAULT_MAX_PIXELS
    large = write_striped_png(src / "pneumonia" / "large.png", width, height)

    summary = ingest(ws, [src])
    assert summary.quarantined == [] and summary.ingested == 9
    manifest = load_manifest(ws.manifest_path)
    row = manifest[manifest["width"] == width].iloc[0]
    assert row["height"] == height

    counts = run_preprocess(ws, ws.config)  # once: a DecompressionBombError traceback here
    assert sum(counts.values()) == 9
    split = load_split(ws, row["split"], mmap=False)
    packed = split.images[split.image_ids.index(row["image_id"])]
    assert packed.shape == (64, 64, 1) and packed.std() > 0  # the stripes, shrunk

    bundle_dir = tmp_path / "bundle"
    config = ws.config
    model = build_model(config.base.image_size, 1, 2, config.model)
    meta = BundleMeta(config.base.class_names, config.base.image_size, 1,
                      config.preprocess.model_dump(mode="json"))  # fmt: skip
    ModelBundle(model, meta).save(bundle_dir)
    out = _served(bundle_dir, [large.read_bytes()])
    assert len(out) == 1 and out["label"].iloc[0] in config.base.class_names


def test_a_lowered_bound_is_applied_the_same_at_ingest_preprocess_and_decode(
    make_workspace, tmp_path
):
    bound = 48 * 48
    ws = make_workspace({"data": {"max_pixels": bound}}, with_data=False)
    src = _source(tmp_path / "src")
    wider = src / "normal" / "wider.png"
    Image.fromarray(np.random.default_rng(7).integers(0, 255, (48, 49), np.uint8)).save(wider)

    summary = ingest(ws, [src])
    assert summary.ingested == 8
    [refused] = summary.quarantined
    reason = (f"too many pixels: 49x48 = 2352 exceeds the limit of {bound}; "
              "data.max_pixels in params.yaml sets it")  # fmt: skip
    assert (refused.code, refused.message) == ("too_many_pixels", reason)
    assert run_preprocess(ws, ws.config) == {"train": 4, "val": 2, "test": 2}

    # the same bound lowered below what was ingested: preprocess refuses, naming file and bound
    write_params(ws.root, {"data": {"max_pixels": bound - 1}})
    ws = open_workspace(ws.root)
    with pytest.raises(DataError) as caught:
        run_preprocess(ws, ws.config)
    message = str(caught.value)
    assert "\n" not in message
    assert f"48x48 = 2304 exceeds the limit of {bound - 1}; data.max_pixels" in message
    assert message.startswith("data/") and "cannot be preprocessed" in message
    # and the decoder a served model uses refuses the same file under the same bound
    stored = ws.resolve(load_manifest(ws.manifest_path)["source_path"].iloc[0])
    with pytest.raises(TooManyPixels, match=f"exceeds the limit of {bound - 1}"):
        decode_image(stored.read_bytes(), max_pixels=ws.config.data.max_pixels)

    done = medimg_cli("preprocess", cwd=ws.root)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "exceeds the limit of 2303; data.max_pixels" in lines[0]


def test_the_served_model_decodes_under_the_bound_it_was_trained_with(tmp_path):
    # a workspace with data.max_pixels lowered: its bundle records the bound, and the served
    # model refuses what ingest would have quarantined, with the same one-line reason
    bound = 48 * 48
    bundle_dir = tmp_path / "bundle"
    meta = BundleMeta(["normal", "pneumonia"], 32, 1, {}, max_pixels=bound)
    ModelBundle(build_model(32, 1, 2, parse_config({}).model), meta).save(bundle_dir)
    fits, wider = tmp_path / "fits.png", tmp_path / "wider.png"
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (48, 48), np.uint8)).save(fits)
    Image.fromarray(rng.integers(0, 255, (48, 49), np.uint8)).save(wider)
    assert len(_served(bundle_dir, [fits.read_bytes()])) == 1
    with pytest.raises(Exception, match=f"49x48 = 2352 exceeds the limit of {bound}"):
        _served(bundle_dir, [wider.read_bytes()])
