"""The training loop on real tiny workspaces: resume after a crash, fine-tuning, losses."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import medimg_cli, write_params

from medimg.bundle import ModelBundle
from medimg.config import parse_config
from medimg.training.accelerate import BF16_FLAGS, cpu_flags
from medimg.training.models import batchnorm_layers, build_model
from medimg.training.stage import run_train
from medimg.training.train import (
    STATE_FILE,
    class_weights,
    plan_phases,
)
from medimg.workspace import open_workspace


def _history(ws) -> list[dict[str, str]]:
    with (ws.reports_dir / "train_history.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.integration
def test_a_killed_run_resumes_from_its_last_epoch_and_ends_at_the_same_count(prepared_workspace):
    epochs = 6
    ws = prepared_workspace({"train": {"epochs": epochs, "early_stopping_patience": 50,
                                       "lr_schedule": "constant"}}, through="preprocess")
    exe = Path(sys.executable).with_name("medimg")
    process = subprocess.Popen([str(exe), "train", "--workspace", str(ws.root)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_path = ws.checkpoint_dir / STATE_FILE
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if state_path.is_file() and json.loads(state_path.read_text())["epoch"] >= 2:
                break
            time.sleep(0.02)
        assert process.poll() is None, "training ended before it could be killed"
        process.send_signal(signal.SIGKILL)  # mid-epoch: the next epoch starts at once
    finally:
        process.kill()
        process.wait()
    assert not (ws.model_dir / "model.keras").exists(), "the killed run must not have finished"
    crashed = json.loads(state_path.read_text())  # the committed checkpoint is whole
    done = crashed["epoch"]
    assert 2 <= done < epochs

    result = medimg_cli("train", "--workspace", str(ws.root), cwd=ws.root)
    assert result.returncode == 0, result.stderr
    assert f"resumed after epoch {done}" in result.stdout
    rows = _history(ws)
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    # the epochs before the crash are the crashed run's own, not trained again
    assert [float(r["loss"]) for r in rows[:done]] == pytest.approx(
        crashed["history"]["loss"], rel=1e-5)
    run = json.loads((ws.reports_dir / "train_run.json").read_text())
    assert run["resumed_from_epoch"] == done and run["epochs"] == epochs
    assert (ws.model_dir / "model.keras").is_file()
    assert not ws.checkpoint_dir.exists(), "a finished run leaves no checkpoint behind"


@pytest.mark.integration
def test_a_checkpoint_from_other_params_is_not_resumed(prepared_workspace):
    ws = prepared_workspace({"train": {"epochs": 2}}, through="preprocess")
    ws.checkpoint_dir.mkdir(parents=True)
    (ws.checkpoint_dir / STATE_FILE).write_text(json.dumps(
        {"fingerprint": "other-params", "epoch": 1, "phase": 0, "weights": "x.weights.h5"}))
    result = run_train(ws, ws.config)
    assert result.resumed_from == 0 and result.epochs_run == 2


@pytest.mark.integration
def test_fine_tuning_trains_the_head_first_then_everything_at_a_lower_rate(prepared_workspace):
    ws = prepared_workspace({
        "base": {"image_size": 32},
        "model": {"architecture": "efficientnetb0", "weights": "weights/b0.weights.h5",
                  "fine_tune": {"frozen_epochs": 1, "learning_rate_factor": 0.1}},
        "train": {"epochs": 1, "learning_rate": 0.001, "lr_schedule": "constant"},
    }, through="preprocess")
    b0 = parse_config({"model": {"architecture": "efficientnetb0"}}).model
    source = build_model(32, 3, 2, b0)
    weights_file = ws.root / "weights" / "b0.weights.h5"
    weights_file.parent.mkdir()
    saved_backbone = source.get_layer("backbone")
    saved_backbone.save_weights(weights_file)
    expected = [w.copy() for w in saved_backbone.get_weights()]
    expected_stats = _batchnorm_statistics(saved_backbone)

    # frozen phase only: the backbone leaves training exactly as it came from the file
    run_train(ws, ws.config)
    from medimg.bundle import ModelBundle

    frozen = ModelBundle.load(ws.model_dir).model.get_layer("backbone").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(frozen, expected, strict=True))

    # then unfrozen at a tenth of the rate: the backbone itself learns (the last epoch's
    # weights are kept, the best-val_loss epoch may be the frozen one on so few images)
    write_params(ws.root, {"train": {"epochs": 2, "restore_best_weights": False}})
    result = run_train(ws, open_workspace(ws.root).config)
    assert result.history["learning_rate"] == pytest.approx([0.001, 0.0001])
    tuned_backbone = ModelBundle.load(ws.model_dir).model.get_layer("backbone")
    tuned = tuned_backbone.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(tuned, expected, strict=True))
    # model.fine_tune.freeze_batchnorm (default true): the pretrained moving mean and variance
    # of every batch normalisation layer come through fine-tuning unchanged
    stats = _batchnorm_statistics(tuned_backbone)
    assert stats.keys() == expected_stats.keys()
    assert all(np.array_equal(stats[k], expected_stats[k]) for k in stats)


def _batchnorm_statistics(backbone: keras.Model) -> dict[str, np.ndarray]:
    return {f"{layer.name}/{v.name}": keras.ops.convert_to_numpy(v).copy()
            for layer in batchnorm_layers(backbone)
            for v in (layer.moving_mean, layer.moving_variance)}


@pytest.mark.integration
def test_weights_that_are_not_there_fail_in_one_line(prepared_workspace):
    ws = prepared_workspace({"model": {"architecture": "densenet121",
                                       "weights": "weights/missing.weights.h5"}},
                            through="preprocess")
    result = medimg_cli("train", "--workspace", str(ws.root), cwd=ws.root)
    assert result.returncode != 0
    assert "missing.weights.h5" in result.stderr and "downloads nothing" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.integration
def test_focal_loss_balanced_weights_and_cosine_schedule_train(prepared_workspace):
    ws = prepared_workspace({"train": {
        "epochs": 3, "loss": "focal", "class_weight": "balanced", "lr_schedule": "cosine",
        "learning_rate": 0.001, "min_learning_rate": 0.0, "early_stopping_patience": 10}},
        through="preprocess")
    result = run_train(ws, ws.config)
    rates = result.history["learning_rate"]
    assert rates[0] > rates[1] > rates[2]  # cosine decay, per step, seen at each epoch end
    assert all(np.isfinite(result.history["loss"]))
    assert (ws.model_dir / "model.keras").is_file()


@pytest.mark.integration
def test_mixed_precision_auto_records_a_choice_and_both_timings(prepared_workspace):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("describes a CPU-only machine; this one has a GPU")
    ws = prepared_workspace({"train": {"epochs": 1, "mixed_precision": "auto"}},
                            through="preprocess")
    result = run_train(ws, ws.config)
    run = json.loads((ws.reports_dir / "train_run.json").read_text())
    if cpu_flags() & BF16_FLAGS:
        timings = run["precision_timings"]
        assert set(timings) == {"float32", "mixed_bfloat16"}
        assert all(ms > 0 for ms in timings.values())
        assert run["precision"] == min(timings, key=timings.get)
        assert run["precision"] in run["note"] and "ms/step" in run["note"]
    else:  # nothing to time against: float32, and why
        assert run["precision"] == "float32" and run["precision_timings"] is None
        assert "bfloat16" in run["note"]
    assert result.placement.precision == run["precision"]
    assert run["device"] == "CPU" and run["replicas"] == 1 and run["strategy"] == "default"
    assert keras.config.dtype_policy().name == "float32", "the global policy is restored"
    # the bundle serves on any machine: float32 whatever trained
    bundle = ModelBundle.load(ws.model_dir)
    assert all(w.dtype == "float32" for w in bundle.model.weights)


@pytest.mark.integration
def test_mixed_precision_true_forces_the_mixed_policy(prepared_workspace):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("describes a CPU-only machine; this one has a GPU")
    ws = prepared_workspace({"train": {"epochs": 1, "mixed_precision": True}},
                            through="preprocess")
    run_train(ws, ws.config)
    run = json.loads((ws.reports_dir / "train_run.json").read_text())
    assert run["precision"] == "mixed_bfloat16" and run["precision_timings"] is None
    assert keras.config.dtype_policy().name == "float32", "the global policy is restored"


def test_balanced_class_weights_make_each_class_weigh_the_same():
    labels = np.array([0] * 90 + [1] * 10)
    weights = class_weights(labels, 2)
    assert weights[0] * 90 == pytest.approx(weights[1] * 10)
    assert weights[0] * 90 + weights[1] * 10 == pytest.approx(len(labels))


def test_phases_freeze_only_with_weights():
    config = parse_config({"train": {"epochs": 10, "learning_rate": 0.01},
                           "model": {"fine_tune": {"frozen_epochs": 3,
                                                   "learning_rate_factor": 0.1}}})
    assert [(p.start, p.end, p.frozen) for p in plan_phases(config, has_weights=False)] == [
        (0, 10, False)]
    phases = plan_phases(config, has_weights=True)
    assert [(p.start, p.end, p.frozen) for p in phases] == [(0, 3, True), (3, 10, False)]
    assert phases[1].learning_rate == pytest.approx(0.001)
    probe = parse_config({"train": {"epochs": 2},
                          "model": {"fine_tune": {"frozen_epochs": 5}}})
    assert [(p.start, p.end, p.frozen) for p in plan_phases(probe, has_weights=True)] == [
        (0, 2, True)]  # a linear probe: the head alone


def test_pretrained_batch_norm_stays_frozen_after_unfreezing_unless_asked_otherwise():
    def freezes(fine_tune: dict, has_weights: bool) -> list[bool]:
        config = parse_config({"train": {"epochs": 10}, "model": {"fine_tune": fine_tune}})
        return [p.freeze_batchnorm for p in plan_phases(config, has_weights)]

    assert freezes({"frozen_epochs": 3}, has_weights=True) == [True, True]  # the default
    assert freezes({"frozen_epochs": 0}, has_weights=True) == [True]
    assert freezes({"frozen_epochs": 3, "freeze_batchnorm": False}, has_weights=True) == [
        True, False]  # a frozen backbone's batch norm is frozen with it whatever the setting
    # a backbone trained from scratch has no statistics to keep: it learns its own
    assert freezes({"frozen_epochs": 3}, has_weights=False) == [False]


@pytest.fixture(autouse=True)
def _float32_policy():
    yield
    keras.config.set_dtype_policy("float32")


def test_a_cosine_schedule_that_cannot_decay_is_refused_at_load():
    from medimg.errors import ConfigError

    with pytest.raises(ConfigError, match="cosine schedule would not decay"):
        parse_config({"train": {"lr_schedule": "cosine", "learning_rate": 0.001,
                                "min_learning_rate": 0.001}})


@pytest.mark.parametrize("method", ["target_recall", "max_f1"])
@pytest.mark.integration
def test_the_threshold_is_chosen_on_validation_and_travels_with_the_model(prepared_workspace,
                                                                          method):
    from medimg.bundle import ModelBundle
    from medimg.data.packed import load_split
    from medimg.evaluation.stage import run_evaluate
    from medimg.training.operating_point import select_threshold

    ws = prepared_workspace({"train": {"epochs": 2, "threshold_method": method,
                                       "target_recall": 0.9}}, through="preprocess")
    run_train(ws, ws.config)
    bundle = ModelBundle.load(ws.model_dir)
    point = bundle.meta.operating_point
    assert point["method"] == method and bundle.meta.threshold == point["threshold"]
    # the saved model's own validation scores give back the same operating point
    val = load_split(ws, "val")
    scores = bundle.predict_packed(val.images)[:, 1]
    again = select_threshold(val.labels == 1, scores, ws.config.train)
    assert again.threshold == pytest.approx(point["threshold"], abs=1e-6)
    assert np.isclose(scores, point["threshold"], atol=1e-6).any()  # one of the scores
    if method == "target_recall":
        assert point["recall"] >= 0.9
    # evaluation decides at that threshold and says how it was chosen
    metrics = run_evaluate(ws, ws.config).metrics
    assert metrics["threshold"] == bundle.meta.threshold
    assert metrics["operating_point"]["method"] == method


@pytest.mark.integration
def test_the_bundle_keeps_the_best_epoch_or_the_last_as_asked(prepared_workspace):
    from medimg.bundle import ModelBundle
    from medimg.data.packed import load_split

    ws = prepared_workspace({"train": {"epochs": 4, "learning_rate": 0.003,
                                       "lr_schedule": "constant",
                                       "early_stopping_patience": 50}}, through="preprocess")
    val = load_split(ws, "val")

    def bundle_val_loss() -> float:  # the model's own probabilities, before calibration
        probs = ModelBundle.load(ws.model_dir).predict_packed(val.images, calibrated=False)
        return float(np.mean(-np.log(np.clip(probs[np.arange(len(val.labels)), val.labels],
                                             1e-7, 1.0))))

    best = run_train(ws, ws.config)
    losses = best.history["val_loss"]
    assert best.best_epoch == int(np.argmin(losses)) + 1 < len(losses)  # the seeded run's
    assert best.kept_epoch == best.best_epoch
    assert bundle_val_loss() == pytest.approx(min(losses), rel=1e-3)

    write_params(ws.root, {"train": {"restore_best_weights": False}})
    last = run_train(ws, open_workspace(ws.root).config)
    assert last.history["val_loss"] == pytest.approx(losses, rel=1e-4)  # seeded: the same run
    assert last.kept_epoch == 4
    assert bundle_val_loss() == pytest.approx(last.history["val_loss"][-1], rel=1e-3)
    run = json.loads((ws.reports_dir / "train_run.json").read_text())
    assert (run["best_epoch"], run["kept_epoch"]) == (best.best_epoch, 4)


def _auto_placement(strategy: str = "default"):
    from medimg.training.accelerate import AUTO, Placement

    return Placement(strategy=strategy, replicas=1, device="CPU", precision=AUTO,
                     jit_compile=False)


def test_auto_keeps_the_faster_policy_and_says_so():
    from medimg.training.train import _resolve_precision

    placed = _resolve_precision(_auto_placement(), {}, False,
                                lambda: {"float32": 9.0, "mixed_bfloat16": 5.5})
    assert placed.precision == "mixed_bfloat16"
    assert placed.precision_timings == {"float32": 9.0, "mixed_bfloat16": 5.5}
    assert "9.0 ms/step" in placed.note and "training in mixed_bfloat16" in placed.note


def test_a_resumed_auto_run_keeps_its_checkpoints_choice_without_timing():
    from medimg.training.train import _resolve_precision

    def never() -> dict:
        raise AssertionError("a resumed run must not time again")

    state = {"precision": "float32", "precision_timings": {"float32": 4.0, "mixed_bfloat16": 6.0}}
    placed = _resolve_precision(_auto_placement(), state, True, never)
    assert placed.precision == "float32" and placed.precision_timings == state["precision_timings"]


@pytest.mark.parametrize(("strategy", "can_time", "why"), [
    ("multi_worker", True, "several workers"), ("default", False, "smaller than one batch")])
def test_auto_does_not_time_where_a_timing_cannot_decide(strategy: str, can_time: bool, why: str):
    from medimg.training.train import _resolve_precision

    def never() -> dict:
        raise AssertionError("nothing may be timed here")

    placed = _resolve_precision(_auto_placement(strategy), {}, False, never, can_time=can_time)
    assert placed.precision == "float32" and why in placed.note
