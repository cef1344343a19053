"""tf.data input pipelines over the packed uint8 arrays.

The arrays are decoded and preprocessed once (``medimg preprocess``) and read here through a
memory map: each batch copies only its own rows, so a split larger than memory still trains.
Training shuffles indices (not pixels) with a per-epoch seed, gathers each batch from the map,
warps the whole batch once in the graph and prefetches, so the model never waits on the CPU.
"""

from __future__ import annotations

import math
import mmap

import numpy as np
import tensorflow as tf

from medimg.config import Config
from medimg.training.augment import augment_batch, is_identity


def targets(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """One sigmoid target for two classes, one-hot rows for more."""
    if n_classes == 2:
        return labels.astype(np.float32)[:, None]
    return np.eye(n_classes, dtype=np.float32)[labels]


def steps_per_epoch(n_images: int, batch_size: int) -> int:
    return max(1, math.ceil(n_images / batch_size))


RELEASE_BYTES = 16 * 1024 * 1024
MIN_RAM_BUDGET = 64 * 1024 * 1024
BUFFERED_BATCHES = 8


def _gatherer(images: np.ndarray, y: np.ndarray):
    """A function from a batch of row indices to ``(images, targets)`` for those rows.

    A memory-mapped ``.npy`` is read through a map of its own, whose pages are handed back
    (``MADV_DONTNEED``) after every 16 MiB read: the bytes stay in the OS page cache, but pages
    touched through a map would otherwise stay in the process's resident set, so one epoch
    would leave the whole array counted against the trainer's memory.
    """
    whole_file = (isinstance(images, np.memmap) and images.filename is not None
                  and isinstance(images.base, mmap.mmap) and images.flags.c_contiguous)
    if not whole_file:  # an in-memory array, or a view of a map: index it directly
        def gather_in_memory(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            index = np.sort(index)
            return np.ascontiguousarray(images[index]), y[index]

        return gather_in_memory

    with open(images.filename, "rb") as handle:
        mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    rows = np.frombuffer(mapping, dtype=images.dtype, count=images.size,
                         offset=images.offset).reshape(images.shape)
    row_bytes = int(np.prod(images.shape[1:])) * images.itemsize
    can_release = hasattr(mmap, "MADV_DONTNEED")
    read = [0]

    def gather(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        index = np.sort(index)  # ascending rows read the file front to back
        out = rows[index]  # fancy indexing copies
        read[0] += len(index) * row_bytes
        if can_release and read[0] >= RELEASE_BYTES:
            mapping.madvise(mmap.MADV_DONTNEED)
            read[0] = 0
        return out, y[index]

    return gather


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    config: Config,
    training: bool,
    *,
    batch_size: int | None = None,
    initial_epoch: int = 0,
    epochs: int | None = None,
) -> tf.data.Dataset:
    """Batches of ``(float32 images, targets)``.

    Training yields ``epochs - initial_epoch`` epochs back to back (pass
    :func:`steps_per_epoch` to ``fit``): epoch ``e`` is shuffled with the seed ``(seed, e)`` and
    batch ``k`` of it is augmented with ``(seed, e * steps + k)``, so a run resumed at epoch ``e``
    sees exactly the batches the uninterrupted run would have seen.

    The evaluation path neither shuffles nor augments, so predictions stay aligned with labels.
    """
    n_classes = len(config.base.class_names)
    batch_size = batch_size or config.train.batch_size
    n = len(labels)
    y = targets(np.asarray(labels), n_classes)
    shape = (None, *images.shape[1:])
    gather = _gatherer(images, y)

    def load(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        # uint8 until the warp: a quarter of the bytes in every buffer before it
        x, t = tf.numpy_function(gather, [index], (tf.uint8, tf.float32), stateful=False)
        x.set_shape(shape)
        t.set_shape((None, y.shape[1]))
        return x, t

    def to_float(x: tf.Tensor, t: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.cast(x, tf.float32), t

    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    # tf.data's autotuner may otherwise buffer batches up to half the machine's RAM; a few
    # batches ahead keep any model fed, and the trainer's memory stays its model's own
    batch_bytes = batch_size * int(np.prod(images.shape[1:])) * 4  # float32 after the cast
    options.autotune.ram_budget = max(MIN_RAM_BUDGET, BUFFERED_BATCHES * batch_bytes)

    if not training:
        dataset = tf.data.Dataset.range(n).batch(batch_size).map(load).map(to_float)
        return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)

    seed = config.base.seed
    steps = steps_per_epoch(n, batch_size)
    # ingest writes a split grouped by label, so only a whole-split shuffle mixes classes
    buffer = min(config.train.shuffle_buffer or n, n)
    last = epochs if epochs is not None else config.train.epochs

    def one_epoch(epoch: int) -> tf.data.Dataset:
        order = tf.data.Dataset.range(n).shuffle(
            buffer, seed=seed * 100_003 + epoch, reshuffle_each_iteration=False)
        batches = order.batch(batch_size).map(load, num_parallel_calls=tf.data.AUTOTUNE)
        return batches.enumerate(start=epoch * steps)

    # Each epoch's seed is a Python int: TensorFlow cannot compare a tensor seed with a global
    # seed of 0 (base.seed: 0), so the epochs are not a flat_map over a tensor range.
    epoch_list = list(range(initial_epoch, last))
    if epoch_list:
        order = tf.data.Dataset.range(len(epoch_list)).flat_map(
            lambda k: tf.data.Dataset.from_tensors(k).repeat(steps))
        dataset = tf.data.Dataset.choose_from_datasets([one_epoch(e) for e in epoch_list],
                                                       order)
    else:
        dataset = one_epoch(initial_epoch).take(0)
    augment = config.augment
    if is_identity(augment):
        dataset = dataset.map(lambda step, batch: to_float(*batch))
    else:
        def warp(step: tf.Tensor, batch: tuple[tf.Tensor, tf.Tensor]):
            x, t = batch
            pair = tf.stack([tf.constant(seed, tf.int64), step])
            return augment_batch(x, augment, pair), t  # uint8 in, float32 out

        dataset = dataset.map(warp, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)
