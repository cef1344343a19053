"""Training throughput: the seed's ImageDataGenerator pipeline against ours, side by side.

On the same generated 512x512 PNGs, resized to 224x224, with the seed's augmentation (rotation
15 degrees, shifts 0.1, shear 0.1, zoom 0.1), one run measures images per second of:

- (a) seed input: ``ImageDataGenerator.flow_from_directory`` (decode every PNG every epoch,
  augment one image at a time with SciPy on the CPU), greyscale like ours so both feed the same
  model (the seed's own default, RGB, is timed as a variant);
- (b) our input: ``medimg preprocess``'s packed uint8 array, memory-mapped, index-shuffled
  tf.data, one affine warp per whole batch in the graph, prefetch;
- the seed CNN trained by Keras ``fit`` fed by each (same model, batch, optimizer and loss),
  then ours again with XLA (``train.jit_compile``) and with bfloat16 mixed precision forced on,
  to show what they do on this CPU;
- the ceiling: the same model trained on a few batches already in memory, with no input
  pipeline at all. No input pipeline can train faster than that, so ``ceiling_train_speedup``
  (ceiling over seed) bounds what ``train_speedup`` can reach on this machine, and the
  ceiling's peak RSS is what TensorFlow and the model need before any data.

Each contender runs in its own process, so its peak RSS is its own. Both trainings are timed
over the same steps; ours then trains on to the end of the epoch, so its peak RSS covers
training on every one of the images (every page of the memory map read).

Usage:
    python benchmarks/training.py [--images 10000] [--size 512] [--image-size 224]
                                  [--train-steps 30] [--seed-input-batches 60] [--keep DIR]

The one-time decode and preprocess (ours pays it once, the seed pays it every epoch) is reported
separately. The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BATCH = 32
SHEAR_INTENSITY = 0.1  # augment.shear; ImageDataGenerator wants the same shear as an angle


def _write_pngs(out: Path, n_images: int, size: int) -> None:
    sys.path.insert(0, str(HERE))
    from ingest import make_dataset  # the ingest benchmark's phantom PNG writer

    make_dataset(out, n_images, size)


def _pack(src: Path, out: Path, image_size: int) -> float:
    """Decode and preprocess every PNG once into a packed uint8 array (as ``medimg
    preprocess`` does); returns the seconds it took."""
    from medimg.config import PreprocessConfig
    from medimg.data.images import read_image
    from medimg.preprocessing.transforms import preprocess_image

    files = sorted(src.glob("*/*.png"))
    labels = np.array([int(f.parent.name == "pneumonia") for f in files], dtype=np.int64)
    config = PreprocessConfig()
    start = time.perf_counter()
    images = np.lib.format.open_memmap(out / "train_images.npy", mode="w+", dtype=np.uint8,
                                       shape=(len(files), image_size, image_size, 1))

    def load(path: Path) -> np.ndarray:
        return preprocess_image(read_image(path), config, image_size, 1)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for i, pixels in enumerate(pool.map(load, files, chunksize=16)):
            images[i] = pixels
    images.flush()
    np.save(out / "train_labels.npy", labels)
    return time.perf_counter() - start


def _seed_generator(src: Path, image_size: int, color_mode: str = "grayscale"):
    import tensorflow as tf

    generator = tf.keras.preprocessing.image.ImageDataGenerator(
        rotation_range=15,
        width_shift_range=0.1,
        height_shift_range=0.1,
        shear_range=math.degrees(math.atan(SHEAR_INTENSITY)),
        zoom_range=0.1,
        fill_mode="nearest",
    )
    return generator.flow_from_directory(
        str(src), target_size=(image_size, image_size), color_mode=color_mode,
        class_mode="binary", batch_size=BATCH, shuffle=True, seed=0)


def _ours_dataset(packed: Path, epochs: int = 1):
    from medimg.config import parse_config
    from medimg.training.pipeline import make_dataset

    images = np.load(packed / "train_images.npy", mmap_mode="r")
    labels = np.load(packed / "train_labels.npy")
    config = parse_config({"base": {"image_size": int(images.shape[1])},
                           "train": {"batch_size": BATCH}})
    return make_dataset(images, labels, config, training=True, epochs=epochs), len(labels)


def _seed_cnn(image_size: int, jit: bool | str = "auto", channels: int = 1):
    import keras

    from medimg.config import ModelConfig
    from medimg.training.models import build_seed_cnn

    model = build_seed_cnn(image_size, channels, 2, ModelConfig())
    model.compile(optimizer=keras.optimizers.Adam(3e-4), loss="binary_crossentropy",
                  jit_compile=jit)
    return model


class _StepClock:
    """Images/s over the steps after the warm-up ones (tracing, first allocations)."""

    def __init__(self, warmup: int, steps: int) -> None:
        import keras

        clock = self

        class Callback(keras.callbacks.Callback):
            def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
                if batch + 1 == warmup:
                    clock.start = time.perf_counter()
                elif batch + 1 == warmup + steps:
                    clock.end = time.perf_counter()

        self.callback = Callback()
        self.steps = steps

    def ips(self) -> float:
        return self.steps * BATCH / (self.end - self.start)


def role_seed_input(args: argparse.Namespace) -> dict:
    iterator = _seed_generator(args.src, args.image_size)
    next(iterator)
    start = time.perf_counter()
    for _ in range(args.seed_input_batches):
        x, _ = next(iterator)
    seconds = time.perf_counter() - start
    assert x.shape[1:] == (args.image_size, args.image_size, 1), x.shape
    return {"ips": args.seed_input_batches * BATCH / seconds}


def role_ours_input(args: argparse.Namespace) -> dict:
    dataset, n = _ours_dataset(args.packed)
    iterator = iter(dataset)
    seen = int(next(iterator)[0].shape[0])  # untimed, as the seed's first batch is: tracing
    start = time.perf_counter()
    for x, _ in iterator:
        seen += int(x.shape[0])
    seconds = time.perf_counter() - start
    assert seen == n
    return {"ips": (seen - BATCH) / seconds}


def role_seed_train(args: argparse.Namespace) -> dict:
    iterator = _seed_generator(args.src, args.image_size, args.color_mode)
    model = _seed_cnn(args.image_size, channels=3 if args.color_mode == "rgb" else 1)
    clock = _StepClock(args.warmup, args.train_steps)
    model.fit(iterator, steps_per_epoch=args.train_steps + args.warmup, epochs=1, verbose=0,
              callbacks=[clock.callback])
    return {"ips": clock.ips()}


def role_ours_train(args: argparse.Namespace) -> dict:
    import keras

    dataset, n = _ours_dataset(args.packed)
    if args.precision != "float32":
        keras.config.set_dtype_policy(args.precision)
    model = _seed_cnn(args.image_size, jit=args.jit)
    clock = _StepClock(args.warmup, args.train_steps)
    # timed like the seed, then on to the end of the epoch when asked: every image trained on
    steps = args.train_steps + args.warmup
    if args.whole_epoch:
        steps = max(steps, math.ceil(n / BATCH))
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[clock.callback])
    return {"ips": clock.ips(), "steps": steps}


def role_ceiling(args: argparse.Namespace) -> dict:
    """The model alone: fed from four batches held in memory, so nothing waits on input."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (4 * BATCH, args.image_size, args.image_size, 1)).astype(np.float32)
    y = (rng.random((4 * BATCH, 1)) < 0.5).astype(np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).cache().repeat()
    model = _seed_cnn(args.image_size)
    clock = _StepClock(args.warmup, args.train_steps)
    model.fit(dataset.prefetch(2), steps_per_epoch=args.train_steps + args.warmup, epochs=1,
              verbose=0, callbacks=[clock.callback])
    return {"ips": clock.ips()}


ROLES = {"seed-input": role_seed_input, "ours-input": role_ours_input,
         "seed-train": role_seed_train, "ours-train": role_ours_train, "ceiling": role_ceiling}


def run_role(role: str, args: argparse.Namespace, **extra: str | None) -> tuple[dict, float]:
    """Run one contender in its own process; returns its figures and its peak RSS in GB."""
    command = [sys.executable, __file__, "--role", role, "--src", str(args.src),
               "--packed", str(args.packed), "--image-size", str(args.image_size),
               "--train-steps", str(args.train_steps), "--warmup", str(args.warmup),
               "--seed-input-batches", str(args.seed_input_batches)]
    for key, value in extra.items():
        command += [f"--{key}"] if value is None else [f"--{key}", value]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    stdout, stderr = process.stdout.read(), process.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{role} failed:\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    return result, usage.ru_maxrss / 1024 / 1024  # KiB -> GiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--train-steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed-input-batches", type=int, default=60)
    parser.add_argument("--variants", action=argparse.BooleanOptionalAction, default=True,
                        help="also time ours with XLA and with bfloat16")
    parser.add_argument("--keep", type=Path, help="generate into (or reuse) this folder")
    parser.add_argument("--role", choices=sorted(ROLES), help=argparse.SUPPRESS)
    parser.add_argument("--src", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--packed", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--jit", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--color-mode", default="grayscale", help=argparse.SUPPRESS)
    parser.add_argument("--whole-epoch", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.role:
        if args.jit in ("true", "false"):
            args.jit = args.jit == "true"
        print(json.dumps(ROLES[args.role](args)))
        return

    work = args.keep or Path(tempfile.mkdtemp(prefix="medimg-train-bench-"))
    args.src, args.packed = work / "png", work / "packed"
    try:
        if not (args.src / "normal").is_dir():
            print(f"writing {args.images} PNGs of {args.size}x{args.size} to {args.src} ...",
                  flush=True)
            _write_pngs(args.src, args.images, args.size)
        args.packed.mkdir(parents=True, exist_ok=True)
        pack_seconds = _pack(args.src, args.packed, args.image_size)
        print(f"decode + preprocess once: {pack_seconds:.1f}s "
              f"({args.images / pack_seconds:.0f} images/s)", flush=True)

        seed_in, _ = run_role("seed-input", args)
        ours_in, _ = run_role("ours-input", args)
        print(f"input   seed {seed_in['ips']:8.1f} img/s | ours {ours_in['ips']:8.1f} img/s | "
              f"x{ours_in['ips'] / seed_in['ips']:.1f}", flush=True)
        seed_tr, seed_rss = run_role("seed-train", args)
        ours_tr, ours_rss = run_role("ours-train", args, **{"whole-epoch": None})
        ceiling, ceiling_rss = run_role("ceiling", args)
        print(f"train   seed {seed_tr['ips']:8.1f} img/s | ours {ours_tr['ips']:8.1f} img/s | "
              f"x{ours_tr['ips'] / seed_tr['ips']:.2f} | ceiling (model alone) "
              f"{ceiling['ips']:.1f} img/s, x{ceiling['ips'] / seed_tr['ips']:.2f} over the seed",
              flush=True)
        print(f"peak RSS seed {seed_rss:.2f} GB | ours {ours_rss:.2f} GB (trained through all "
              f"{args.images} images) | model alone {ceiling_rss:.2f} GB", flush=True)
        figures = {
            "seed_input_ips": round(seed_in["ips"], 1),
            "input_ips": round(ours_in["ips"], 1),
            "input_speedup": round(ours_in["ips"] / seed_in["ips"], 2),
            "seed_train_ips": round(seed_tr["ips"], 2),
            "train_ips": round(ours_tr["ips"], 2),
            "train_speedup": round(ours_tr["ips"] / seed_tr["ips"], 2),
            "peak_rss_gb": round(ours_rss, 2),
            "seed_peak_rss_gb": round(seed_rss, 2),
            "ceiling_train_ips": round(ceiling["ips"], 2),
            "ceiling_train_speedup": round(ceiling["ips"] / seed_tr["ips"], 2),
            "model_alone_peak_rss_gb": round(ceiling_rss, 2),
            "images": args.images,
            "image_size": args.image_size,
            "preprocess_once_s": round(pack_seconds, 1),
            "cores": os.cpu_count(),
        }
        if args.variants:
            xla, _ = run_role("ours-train", args, jit="true")
            bf16, _ = run_role("ours-train", args, precision="mixed_bfloat16")
            print(f"ours + XLA {xla['ips']:.2f} img/s (x{xla['ips'] / ours_tr['ips']:.2f}) | "
                  f"ours + mixed_bfloat16 {bf16['ips']:.2f} img/s "
                  f"(x{bf16['ips'] / ours_tr['ips']:.2f})", flush=True)
            # the seed as written used flow_from_directory's default, RGB: three decoded and
            # warped channels and a three-channel first convolution
            rgb, rgb_rss = run_role("seed-train", args, **{"color-mode": "rgb"})
            print(f"seed with its default color_mode='rgb' {rgb['ips']:.2f} img/s "
                  f"(ours x{ours_tr['ips'] / rgb['ips']:.2f}), peak RSS {rgb_rss:.2f} GB",
                  flush=True)
            figures.update({"xla_train_ips": round(xla["ips"], 2),
                            "bf16_train_ips": round(bf16["ips"], 2),
                            "seed_rgb_train_ips": round(rgb["ips"], 2)})
        print(json.dumps(figures))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
