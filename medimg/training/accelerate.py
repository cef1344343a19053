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
AUTO = "auto"
# CPUs with bfloat16 units, where the mixed policy may pay: AMX tiles, or AVX512-BF16 alone.
# Which is faster depends on the chip (1.71x on a Zen 4 EPYC with AVX512-BF16, 0.88x on an
# Intel one), so ``train.mixed_precision: auto`` measures rather than assumes.
BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})

@dataclass(frozen=True)
class Placement:
    """What a training run ran on, as logged to MLflow."""

    strategy: str
    replicas: int
    device: str
    precision: str
    jit_compile: bool
    note: str = ""
    # train.mixed_precision: auto: milliseconds per training step under each policy timed
    precision_timings: dict[str, float] | None = None

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


def mixed_policy(on_gpu: bool, flags: frozenset[str]) -> str | None:
    """The mixed policy this device supports in hardware: float16 on GPUs, bfloat16 on CPUs with
    bfloat16 units (AMX or AVX512-BF16); None where bfloat16 would only be emulated."""
    if on_gpu:
        return "mixed_float16"
    if flags & BF16_FLAGS:
        return "mixed_bfloat16"
    return None


def choose_precision(setting: bool | str, on_gpu: bool, flags: frozenset[str]
                     ) -> tuple[str, str]:
    """The Keras dtype policy for ``train.mixed_precision``, and a note on the choice.

    ``false``: float32. ``true``: forced, float16 on GPUs (with dynamic loss scaling), bfloat16
    on CPUs (emulated, and slow, without bfloat16 units: the note says so). ``auto``:
    :data:`AUTO`, for training to time both (:func:`faster_precision`), or float32 where the
    device has no mixed policy in hardware.
    """
    if setting is False:
        return "float32", ""
    mixed = mixed_policy(on_gpu, flags)
    if setting == AUTO:
        if mixed is None:
            return "float32", ("train.mixed_precision is auto, and this CPU has no bfloat16 "
                               "units (amx_bf16, avx512_bf16), so training stays float32 "
                               "without timing")
        return AUTO, ""
    if mixed is None:
        return "mixed_bfloat16", ("train.mixed_precision is true on a CPU without bfloat16 "
                                  "units (amx_bf16, avx512_bf16): bfloat16 is emulated and "
                                  "usually slower than float32; auto would measure it")
    return mixed, ""


def faster_precision(timings: dict[str, float]) -> str:
    """The policy with the fewest milliseconds per step; float32 on a tie."""
    return min(timings, key=lambda policy: (timings[policy], policy != "float32"))


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


def place(mixed_precision: bool | str, jit_compile: bool | str, devices: list[str] | None = None,
          tf_config_text: str | None = None):
    """Pick strategy, precision and XLA for this process; returns ``(strategy, Placement)``.

    With ``mixed_precision`` auto on a device with a mixed policy, the placement's precision is
    :data:`AUTO` until training has timed both (:func:`mixed_policy` names the other one).

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
