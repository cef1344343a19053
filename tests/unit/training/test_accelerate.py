"""Where training runs: strategy, precision and XLA choices, and a real two-replica run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from medimg.errors import ConfigError
from medimg.training.accelerate import (
    AUTO,
    BF16_FLAGS,
    Placement,
    choose_jit,
    choose_precision,
    choose_strategy,
    cpu_flags,
    faster_precision,
    mixed_policy,
    parse_tf_config,
    place,
)


def tf_config(cluster: dict, task_type: str = "worker", index: int = 0) -> dict:
    return parse_tf_config(json.dumps({"cluster": cluster, "task": {"type": task_type,
                                                                     "index": index}}))


ONE_WORKER = {"worker": ["10.0.0.1:2222"]}
CHIEF_AND_WORKER = {"chief": ["10.0.0.1:2222"], "worker": ["10.0.0.2:2222"]}
TWO_WORKERS = {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]}


@pytest.mark.parametrize(
    ("n_gpus", "cluster", "expected"),
    [
        (0, None, "default"),
        (1, None, "default"),
        (2, None, "mirrored"),
        (8, None, "mirrored"),
        (0, ONE_WORKER, "default"),
        (1, ONE_WORKER, "default"),
        (4, ONE_WORKER, "mirrored"),
        (0, CHIEF_AND_WORKER, "multi_worker"),
        (0, TWO_WORKERS, "multi_worker"),
        (2, TWO_WORKERS, "multi_worker"),
        (8, CHIEF_AND_WORKER, "multi_worker"),
    ],
)
def test_choose_strategy(n_gpus: int, cluster: dict | None, expected: str):
    spec = tf_config(cluster) if cluster is not None else None
    assert choose_strategy(n_gpus, spec) == expected


def test_parameter_servers_do_not_count_as_workers():
    spec = tf_config({"worker": ["a:1"], "ps": ["b:1", "c:1"]})
    assert choose_strategy(0, spec) == "default"


@pytest.mark.parametrize("text", [None, "", "   ", "\n"])
def test_unset_or_empty_tf_config_means_this_machine_alone(text: str | None):
    assert parse_tf_config(text) is None


def test_tf_config_is_returned_as_parsed():
    text = json.dumps({"cluster": TWO_WORKERS, "task": {"type": "worker", "index": 1}})
    assert parse_tf_config(text) == {"cluster": TWO_WORKERS,
                                     "task": {"type": "worker", "index": 1}}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("{cluster: ", ["not valid JSON", "unset it"]),
        ("[1, 2]", ["'cluster'"]),
        (json.dumps({"task": {"type": "worker", "index": 0}}), ["'cluster'", "host:port"]),
        (json.dumps({"cluster": ["a:1"], "task": {"type": "worker", "index": 0}}), ["'cluster'"]),
        (json.dumps({"cluster": TWO_WORKERS}), ["task.type", "task.index"]),
        (json.dumps({"cluster": TWO_WORKERS, "task": {"type": "worker"}}), ["task.index"]),
        (json.dumps({"cluster": TWO_WORKERS, "task": {"index": 0}}), ["task.type"]),
        (json.dumps({"cluster": {"worker": "10.0.0.1:2222"},
                     "task": {"type": "worker", "index": 0}}), ["cluster.worker", "list"]),
    ],
    ids=["bad-json", "not-a-mapping", "no-cluster", "cluster-not-mapping", "no-task",
         "no-index", "no-type", "job-not-a-list"],
)
def test_malformed_tf_config_is_a_config_error_saying_what_is_wrong(text: str, words: list):
    with pytest.raises(ConfigError) as info:
        parse_tf_config(text)
    message = str(info.value)
    assert message.startswith("TF_CONFIG")
    for word in words:
        assert word in message


BF16 = frozenset({"fpu", "avx512f", "avx512_bf16"})
AMX = frozenset({"fpu", "amx_tile", "amx_bf16"})
PLAIN = frozenset({"fpu", "avx2", "fma"})


@pytest.mark.parametrize(
    ("setting", "on_gpu", "flags", "policy"),
    [
        (False, False, PLAIN, "float32"),
        (False, True, PLAIN, "float32"),
        (False, False, AMX, "float32"),
        (True, True, PLAIN, "mixed_float16"),
        (True, True, BF16, "mixed_float16"),
        (True, False, AMX, "mixed_bfloat16"),
        (True, False, BF16, "mixed_bfloat16"),
        ("auto", True, PLAIN, AUTO),
        ("auto", False, BF16, AUTO),
        ("auto", False, AMX, AUTO),
    ],
)
def test_choose_precision(setting: bool | str, on_gpu: bool, flags: frozenset, policy: str):
    assert choose_precision(setting, on_gpu, flags) == (policy, "")


@pytest.mark.parametrize("flags", [PLAIN, frozenset()])
def test_auto_on_a_cpu_without_bfloat16_units_stays_float32_and_says_why(flags: frozenset):
    policy, note = choose_precision("auto", False, flags)
    assert policy == "float32" and mixed_policy(False, flags) is None
    assert "avx512_bf16" in note and "amx_bf16" in note
    assert "train.mixed_precision" in note and "float32" in note


def test_true_forces_bfloat16_even_where_it_is_emulated_and_warns():
    policy, note = choose_precision(True, False, PLAIN)
    assert policy == "mixed_bfloat16"
    assert "emulated" in note and "auto" in note


def test_the_faster_policy_is_kept_and_a_tie_stays_float32():
    assert faster_precision({"float32": 12.0, "mixed_bfloat16": 7.0}) == "mixed_bfloat16"
    assert faster_precision({"float32": 7.0, "mixed_bfloat16": 12.0}) == "float32"
    assert faster_precision({"float32": 7.0, "mixed_bfloat16": 7.0}) == "float32"


@pytest.mark.parametrize(
    ("setting", "on_gpu", "expected"),
    [("auto", True, True), ("auto", False, False), (True, False, True), (True, True, True),
     (False, True, False), (False, False, False)],
)
def test_choose_jit(setting: bool | str, on_gpu: bool, expected: bool):
    assert choose_jit(setting, on_gpu) is expected


def test_cpu_flags_reads_the_first_flags_line(tmp_path: Path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(textwrap.dedent("""\
        processor\t: 0
        vendor_id\t: GenuineIntel
        model name\t: Some CPU
        flags\t\t: fpu vme avx2 avx512_bf16 amx_bf16
        vmx flags\t: vnmi preemption_timer
        bugs\t\t: spectre_v1

        processor\t: 1
        flags\t\t: fpu vme avx2 avx512_bf16 amx_bf16
        """))
    flags = cpu_flags(cpuinfo)
    assert flags == frozenset({"fpu", "vme", "avx2", "avx512_bf16", "amx_bf16"})
    assert choose_precision("auto", False, flags)[0] == AUTO


def test_cpu_flags_is_empty_without_a_flags_line_or_a_file(tmp_path: Path):
    arm = tmp_path / "cpuinfo"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm\n")
    assert cpu_flags(arm) == frozenset()
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_place_on_this_cpu(monkeypatch: pytest.MonkeyPatch):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this test describes a CPU-only machine; this one has a GPU")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy, placement = place(False, "auto")
    assert placement == Placement(strategy="default", replicas=1, device="CPU",
                                  precision="float32", jit_compile=False, note="")
    assert strategy.num_replicas_in_sync == 1
    assert placement.as_dict()["device"] == "CPU"  # what MLflow records


def test_place_leaves_auto_to_training_where_this_cpu_has_bfloat16_units(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this test describes a CPU-only machine; this one has a GPU")
    with caplog.at_level("WARNING", logger="medimg.training.accelerate"):
        _, placement = place("auto", True)
    assert placement.jit_compile is True
    if cpu_flags() & BF16_FLAGS:
        assert placement.precision == AUTO and placement.note == ""
    else:
        assert placement.precision == "float32" and "bfloat16" in placement.note
        assert placement.note in caplog.text


def test_place_refuses_a_malformed_tf_config():
    with pytest.raises(ConfigError, match=r"task\.type"):
        place(False, "auto", tf_config_text='{"cluster": {"worker": ["a:1", "b:1"]}}')


MIRRORED_RUN = """
import json
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

import keras
from medimg.training.accelerate import place

strategy, placement = place(False, False, devices=["/cpu:0", "/cpu:1"])
batch = 8 * placement.replicas
rng = np.random.default_rng(0)
x = rng.random((4 * batch, 8)).astype("float32")
y = (x.sum(axis=1) > 4).astype("float32")[:, None]
data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
with strategy.scope():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy")
history = model.fit(data, epochs=1, verbose=0)
print("RESULT " + json.dumps({
    "placement": placement.as_dict(),
    "strategy_class": type(strategy).__name__,
    "variable_devices": sorted(v.device for v in model.weights[0].value.values),
    "loss": float(history.history["loss"][-1]),
}))
"""


def test_mirrored_strategy_trains_on_two_logical_cpus():
    # logical devices must be set before TensorFlow initialises, hence a fresh process
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env["CUDA_VISIBLE_DEVICES"] = ""  # the two replicas are the logical CPUs, even on a GPU box
    proc = subprocess.run([sys.executable, "-c", MIRRORED_RUN], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(row for row in proc.stdout.splitlines() if row.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    assert result["placement"]["strategy"] == "mirrored"
    assert result["placement"]["replicas"] == 2
    assert result["strategy_class"] == "MirroredStrategy"
    assert len(result["variable_devices"]) == 2  # each variable mirrored on both replicas
    assert math.isfinite(result["loss"]) and result["loss"] > 0  # it really trained


@pytest.mark.parametrize(
    ("tf_config", "chief"),
    [
        (None, True),
        ({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "chief", "index": 0}},
         True),
        ({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 0}},
         False),
        ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}, True),
        ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}, False),
    ],
)
def test_only_the_chief_writes_checkpoints_and_the_bundle(tf_config, chief):
    from medimg.training.accelerate import is_chief

    assert is_chief(json.dumps(tf_config) if tf_config else None) is chief
