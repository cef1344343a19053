"""Where and how training runs: distribution strategy, precision and XLA.

The same ``medimg train`` runs on a CPU, one GPU, several local GPUs or several machines; what it
picks is decided here from what TensorFlow sees and from ``TF_CONFIG``, and recorded in MLflow.
The choices are plain functions of their inputs so they can be checked without the hardware.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from medimg.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT, MIRRORED, MULTI_WORKER = "default", "mirrored", "multi_worker"
# AMX tiles make bfloat16 pay off; AVX512-BF16 alone trained the seed CNN slower than float32
# (0.88x, docs/performance.md), so it does not count
BF16_FLAGS = frozenset({"amx_bf16"})


@dataclass(frozen=True)
class Placement:
    """What a training run ran on, as logged to MLflow."""

    strategy: str
    replicas: int
    device: str
    precision: str
    jit_compile: bool
    note: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def parse_tf_config(text: str | None) -> dict | None:
    """The ``TF_CONFIG`` cluster description, or None when unset.

    Raises:
        ConfigError: when it is set but is not the JSON TensorFlow expects.
    """
    if not text or not text.strip():
        return None
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({exc.msg}); unset it to train on "
                          "this machine alone") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("cluster"), dict):
        raise ConfigError("TF_CONFIG needs a 'cluster' mapping of job names to host:port lists")
    for job, tasks in spec["cluster"].items():
        if not isinstance(tasks, list | dict):
            raise ConfigError(f"TF_CONFIG cluster.{job} must be a list of host:port strings, "
                              f"got {tasks!r}")
    task = spec.get("task") or {}
    if "type" not in task or "index" not in task:
        raise ConfigError("TF_CONFIG needs task.type and task.index (this machine's role)")
    return spec


def is_chief(tf_config_text: str | None) -> bool:
    """Whether this process writes checkpoints and the bundle: always, unless TF_CONFIG makes
    it a worker other than the chief (or worker 0 when the cluster has no chief)."""
    spec = parse_tf_config(tf_config_text)
    if spec is None:
        return True
    task = spec["task"]
    if task["type"] == "chief":
        return True
    has_chief = bool(spec["cluster"].get("chief"))
    return task["type"] == "worker" and int(task["index"]) == 0 and not has_chief


def choose_strategy(n_gpus: int, tf_config: dict | None) -> str:
    """MultiWorkerMirrored when TF_CONFIG names more than one worker, Mirrored for several local
    GPUs, TensorFlow's default strategy otherwise (one GPU or the CPU)."""
    if tf_config is not None:
        cluster = tf_config["cluster"]
        workers = sum(len(cluster.get(job, [])) for job in ("chief", "worker"))
        if workers > 1:
            return MULTI_WORKER
    if n_gpus > 1:
        return MIRRORED
    return DEFAULT


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def choose_precision(enabled: bool, on_gpu: bool, flags: frozenset[str]) -> tuple[str, str]:
    """The Keras dtype policy for ``train.mixed_precision``, and why when it is not applied.

    float16 on GPUs (with dynamic loss scaling), bfloat16 on CPUs with AMX bfloat16 units;
    elsewhere bfloat16 is emulated or runs on vector units that trained slower than float32 in
    ``benchmarks/training.py``, so training stays float32.
    """
    if not enabled:
        return "float32", ""
    if on_gpu:
        return "mixed_float16", ""
    if flags & BF16_FLAGS:
        return "mixed_bfloat16", ""
    return "float32", ("train.mixed_precision is on, but this CPU has no AMX bfloat16 units "
                       "(amx_bf16), where bfloat16 trains slower than float32 (avx512_bf16 "
                       "alone included), so training stays float32")


def choose_jit(setting: bool | str, on_gpu: bool) -> bool:
    """``train.jit_compile``: explicit true/false, or auto (XLA on accelerators, not on CPUs,
    which is Keras's own rule for TensorFlow)."""
    if setting == "auto":
        return on_gpu
    return bool(setting)


def describe_devices(gpus: list) -> str:
    import tensorflow as tf

    if not gpus:
        return "CPU"
    names = []
    for gpu in gpus:
        try:
            names.append(tf.config.experimental.get_device_details(gpu).get("device_name", "GPU"))
        except (ValueError, RuntimeError):
            names.append("GPU")
    return f"GPU x{len(gpus)} ({', '.join(sorted(set(names)))})"


def make_strategy(kind: str, devices: list[str] | None = None):
    """The tf.distribute strategy for ``kind``; ``devices`` limits a Mirrored strategy."""
    import tensorflow as tf

    if kind == MULTI_WORKER:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == MIRRORED:
        return tf.distribute.MirroredStrategy(devices=devices)
    return tf.distribute.get_strategy()


def place(mixed_precision: bool, jit_compile: bool | str, devices: list[str] | None = None,
          tf_config_text: str | None = None):
    """Pick strategy, precision and XLA for this process; returns ``(strategy, Placement)``.

    ``devices`` (for example two logical CPUs in a test) forces a Mirrored strategy over them.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    tf_config = parse_tf_config(tf_config_text)
    kind = MIRRORED if devices else choose_strategy(len(gpus), tf_config)
    strategy = make_strategy(kind, devices)
    precision, note = choose_precision(mixed_precision, bool(gpus), cpu_flags())
    if note:
        logger.warning(note)
    placement = Placement(
        strategy=kind,
        replicas=int(strategy.num_replicas_in_sync),
        device=describe_devices(gpus),
        precision=precision,
        jit_compile=choose_jit(jit_compile, bool(gpus)),
        note=note,
    )
    return strategy, placement
