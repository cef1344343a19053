"""Warm start: the champion's weights are copied when the shapes match, and refused (with the
reason on record) when they do not."""

from __future__ import annotations

import numpy as np

from medimg.config import parse_config
from medimg.training.models import build_model
from medimg.training.warm_start import apply_warm_start, export_warm_start
from medimg.workspace import Workspace


def _model(size: int, config):
    return build_model(size, 1, 2, config.model)


def test_a_matching_champion_starts_training_from_its_weights(tmp_path):
    config = parse_config({"retrain": {"warm_start": True},
                           "model": {"architecture": "seed_cnn", "dense_units": 8}})
    ws = Workspace(tmp_path)
    champion = _model(32, config)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    champion.save(bundle / "model.keras")
    export_warm_start(ws, bundle, "models:/medimg-classifier/3")

    fresh = _model(32, config)
    assert not all(np.array_equal(a, b) for a, b in zip(fresh.get_weights(),
                                                        champion.get_weights(), strict=True))
    assert apply_warm_start(ws, config, fresh) == "models:/medimg-classifier/3"
    assert all(np.array_equal(a, b) for a, b in zip(fresh.get_weights(),
                                                    champion.get_weights(), strict=True))

    other_size = _model(48, config)
    before = [w.copy() for w in other_size.get_weights()]
    said = apply_warm_start(ws, config, other_size)
    assert said.startswith("none: models:/medimg-classifier/3 has another architecture")
    assert all(np.array_equal(a, b) for a, b in zip(other_size.get_weights(), before,
                                                    strict=True))


def test_off_by_default_and_fresh_without_an_exported_champion(tmp_path):
    ws = Workspace(tmp_path)
    assert apply_warm_start(ws, parse_config({}), object()) == ""
    config = parse_config({"retrain": {"warm_start": True}, "model": {"dense_units": 8}})
    assert apply_warm_start(ws, config, _model(32, config)).startswith("none: no champion")
