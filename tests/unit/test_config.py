from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medimg.config import Config, load_config, parse_config
from medimg.errors import ConfigError
from medimg.workspace import template_file


def test_shipped_params_equal_the_model_defaults():
    # params.yaml and the pydantic defaults are two spellings of one configuration
    assert load_config(template_file("params.yaml")) == Config()


def test_every_stage_has_a_section():
    raw = yaml.safe_load(template_file("params.yaml").read_text())
    assert set(raw) == {"base", "data", "validation", "preprocess", "augment", "model", "train",
                        "evaluate", "gates", "registry", "drift", "retrain", "serve"}


def test_typo_names_the_key_and_the_allowed_keys():
    with pytest.raises(ConfigError) as info:
        parse_config({"train": {"epoch": 3}})
    message = str(info.value)
    assert "train.epoch" in message
    assert "epochs" in message


def test_unknown_section_is_rejected():
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        parse_config({"trian": {"epochs": 3}})


def test_negative_epochs_names_key_value_and_bound():
    with pytest.raises(ConfigError) as info:
        parse_config({"train": {"epochs": -1}})
    assert "train.epochs = -1" in str(info.value)
    assert "greater than 0" in str(info.value)


def test_wrong_type_is_rejected():
    with pytest.raises(ConfigError, match=r"base.image_size = 'big'"):
        parse_config({"base": {"image_size": "big"}})


@pytest.mark.parametrize("bad", [
    {"base": {"class_names": ["only"]}},
    {"base": {"channels": 2}},
    {"data": {"split_fractions": {"train": 0.5, "val": 0.2, "test": 0.2}}},
    {"preprocess": {"denoise_kernel": 4}},
    {"gates": {"min_f1": 1.5}},
    {"preprocess": {"contrast": "sharpen"}},
])
def test_bad_values_fail_at_load(bad):
    with pytest.raises(ConfigError):
        parse_config(bad)


def test_load_reports_yaml_syntax_errors(tmp_path: Path):
    path = tmp_path / "params.yaml"
    path.write_text("base:\n  seed: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_missing_file_says_how_to_make_one(tmp_path: Path):
    with pytest.raises(ConfigError, match="medimg init"):
        load_config(tmp_path / "params.yaml")


def test_flat_params_and_digest():
    config = Config()
    flat = config.flat()
    assert flat["train.epochs"] == config.train.epochs
    assert flat["base.class_names"] == ["normal", "pneumonia"]
    other = parse_config({"train": {"epochs": 3}})
    assert config.digest() != other.digest()
    assert config.digest() == Config().digest()


def test_a_retrain_schedule_that_is_not_cron_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"retrain\.schedule"):
        parse_config({"retrain": {"schedule": "nightly"}})
    with pytest.raises(ConfigError, match=r"retrain\.timezone.*not an IANA time zone"):
        parse_config({"retrain": {"timezone": "Mars/Olympus"}})
    assert parse_config({"retrain": {"schedule": "30 1 * * 1-5"}}).retrain.schedule == \
        "30 1 * * 1-5"


@pytest.mark.parametrize(("sides", "size"), [
    ([], 128),                        # before ingest: the largest
    ([28] * 50, 28),                  # MedMNIST stays at its own 28 pixels
    ([64] * 10 + [30] * 3, 64),
    ([2048, 1024, 3000], 128),        # radiographs are brought down to 128
    ([70, 90, 95], 64),               # never upsampled: the step at or below the median
    ([12, 12, 40], 16),               # smaller than any step: the smallest
])
def test_auto_image_size_follows_the_images_without_upsampling(sides: list[int], size: int):
    from medimg.config import auto_image_size

    assert auto_image_size(sides) == size


def test_a_workspace_resolves_auto_from_its_manifest(tmp_path):
    import pandas as pd

    from medimg.workspace import Workspace

    ws = Workspace(tmp_path)
    ws.params_path.write_text("base:\n  image_size: auto\n")
    assert ws.config.base.image_size == 128  # nothing ingested yet
    ws.manifest_path.parent.mkdir(parents=True)
    pd.DataFrame({"width": [28, 28, 28, 512], "height": [28, 28, 30, 512],
                  "split": ["train", "val", "test", "quarantine"]}).to_parquet(ws.manifest_path)
    assert ws.config.base.image_size == 128, "read once, as the workspace was opened"
    assert ws.reload_config().base.image_size == 28
    ws.params_path.write_text("base:\n  image_size: 96\n")
    assert ws.reload_config().base.image_size == 96  # a number is taken as it is


def test_the_backbones_refuse_films_under_32_pixels_and_auto_gives_them_32(tmp_path):
    import pandas as pd

    from medimg.workspace import Workspace

    with pytest.raises(ConfigError, match="below the 32 pixels resnet50 takes"):
        parse_config({"base": {"image_size": 28}, "model": {"architecture": "resnet50"}})
    ws = Workspace(tmp_path)
    ws.params_path.write_text("model:\n  architecture: densenet121\n")
    ws.manifest_path.parent.mkdir(parents=True)
    pd.DataFrame({"width": [28] * 3, "height": [28] * 3,
                  "split": ["train", "val", "test"]}).to_parquet(ws.manifest_path)
    assert ws.config.base.image_size == 32
