"""The seed's augmentation as one affine warp per image, drawn and applied to whole batches.

Rotation, shift, shear and zoom (and an optional horizontal flip) are composed into a single 3x3
matrix per image, so each image is resampled once. Chaining ``RandomRotation``,
``RandomTranslation``, ``RandomShear`` and ``RandomZoom`` resamples it four times, blurring it a
little more each time and costing four warps.

Conventions, shared by the NumPy reference and the in-graph version:

- coordinates are pixels, ``x`` along the width and ``y`` along the height, about the image centre;
- the image content is flipped, then zoomed by ``zx``/``zy``, sheared by ``x += s * y``, rotated
  by ``theta`` degrees (counter-clockwise on screen) and shifted by ``tx``/``ty`` pixels;
- the warp needs the inverse (output pixel -> input pixel), which is what :func:`affine_matrix`
  returns and what ``ImageProjectiveTransformV3`` takes.

The warp itself is TensorFlow's bilinear ``ImageProjectiveTransformV3`` arithmetic written as
whole-batch gathers and compiled by XLA inside the tf.data graph; tests hold it to that kernel's
pixels in every fill mode.

``augment.shear`` is a shear intensity (the tangent of the shear angle), as in
``keras.layers.RandomShear``; ``ImageDataGenerator``'s ``shear_range`` is an angle in degrees.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from medimg.config import AugmentConfig


def rotation_matrix(theta_degrees: float) -> np.ndarray:
    """Content rotated counter-clockwise on screen (rows grow downwards)."""
    t = math.radians(theta_degrees)
    c, s = math.cos(t), math.sin(t)
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])


def shift_matrix(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def shear_matrix(s: float) -> np.ndarray:
    return np.array([[1.0, s, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def zoom_matrix(zx: float, zy: float) -> np.ndarray:
    return np.array([[zx, 0.0, 0.0], [0.0, zy, 0.0], [0.0, 0.0, 1.0]])


def affine_matrix(
    theta_degrees: float, tx: float, ty: float, shear: float, zx: float, zy: float,
    height: int, width: int, flip: bool = False,
) -> np.ndarray:
    """The one output-to-input matrix for a whole augmentation, about the image centre.

    Equals ``inv(C @ shift @ rotation @ shear @ zoom @ flip @ inv(C))``, built directly from the
    inverses of the parts so no matrix is inverted numerically.
    """
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    centre, uncentre = shift_matrix(cx, cy), shift_matrix(-cx, -cy)
    unflip = zoom_matrix(-1.0 if flip else 1.0, 1.0)
    return (centre @ unflip @ zoom_matrix(1.0 / zx, 1.0 / zy) @ shear_matrix(-shear)
            @ rotation_matrix(-theta_degrees) @ shift_matrix(-tx, -ty) @ uncentre)


def transforms_from_params(
    theta_degrees: tf.Tensor, tx: tf.Tensor, ty: tf.Tensor, shear: tf.Tensor, zx: tf.Tensor,
    zy: tf.Tensor, flip: tf.Tensor, height: int, width: int,
) -> tf.Tensor:
    """``(batch, 8)`` projective rows: :func:`affine_matrix` for a batch of parameter vectors,
    multiplied out in closed form (``flip`` is -1 to flip, 1 not to)."""
    theta = tf.cast(theta_degrees, tf.float32) * (math.pi / 180.0)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    cos, sin = tf.cos(theta), tf.sin(theta)
    # flip^-1 zoom^-1 shear^-1 rotation^-1, with rotation^-1 = [[cos, -sin], [sin, cos]] and
    # shear^-1 = [[1, -s], [0, 1]], applied to (p - c - t), then + c
    a00 = (cos - shear * sin) * flip / zx
    a01 = (-sin - shear * cos) * flip / zx
    a10 = sin / zy
    a11 = cos / zy
    ox, oy = -cx - tx, -cy - ty
    b0 = a00 * ox + a01 * oy + cx
    b1 = a10 * ox + a11 * oy + cy
    zeros = tf.zeros_like(a00)
    return tf.stack([a00, a01, b0, a10, a11, b1, zeros, zeros], axis=1)


def random_transforms(
    batch: tf.Tensor, height: int, width: int, config: AugmentConfig, seed: tf.Tensor
) -> tf.Tensor:
    """``(batch, 8)`` projective rows, one random affine per image, from a stateless seed.

    The same ``seed`` (shape ``[2]``) always gives the same transforms, so training is
    reproducible and a resumed run draws what the uninterrupted one would have drawn. Ranges
    follow ``ImageDataGenerator``: uniform angle, shifts as fractions of the side, zoom drawn
    per axis in ``[1 - zoom, 1 + zoom]``.
    """
    seeds = tf.random.experimental.stateless_split(seed, num=7)

    def uniform(i: int, low: float, high: float) -> tf.Tensor:
        return tf.random.stateless_uniform([batch], seeds[i], low, high, dtype=tf.float32)

    theta = uniform(0, -config.rotation_degrees, config.rotation_degrees)
    tx = uniform(1, -config.width_shift, config.width_shift) * width
    ty = uniform(2, -config.height_shift, config.height_shift) * height
    shear = uniform(3, -config.shear, config.shear)
    zx = uniform(4, 1.0 - config.zoom, 1.0 + config.zoom)
    zy = uniform(5, 1.0 - config.zoom, 1.0 + config.zoom)
    if config.horizontal_flip:
        flip = tf.where(uniform(6, 0.0, 1.0) < 0.5, -1.0, 1.0)
    else:
        flip = tf.ones([batch])
    return transforms_from_params(theta, tx, ty, shear, zx, zy, flip, height, width)


def _map_coordinate(coord: tf.Tensor, length: int, fill_mode: str) -> tf.Tensor:
    """Bring input coordinates that fall outside ``[0, length - 1]`` back inside, exactly as
    TensorFlow's ``ImageProjectiveTransformV3`` does for each fill mode (``constant`` leaves them
    outside, and reads there give the fill value)."""
    if fill_mode == "constant":
        return coord
    last = float(length - 1)
    if length <= 1:
        return tf.zeros_like(coord)
    if fill_mode == "reflect":  # (d c b a | a b c d | d c b a)
        size2 = 2.0 * length
        below = size2 * tf.floor(-coord / size2) + coord
        below = tf.where(below < -length, below + size2, -below - 1.0)
        above = coord - size2 * tf.floor(coord / size2)
        above = tf.where(above >= length, size2 - above - 1.0, above)
        coord = tf.where(coord < 0.0, below, tf.where(coord > last, above, coord))
    elif fill_mode == "wrap":  # (a b c d | a b c d | a b c d)
        below = coord + length * (tf.floor(-coord / last) + 1.0)
        above = coord - length * tf.floor(coord / last)
        coord = tf.where(coord < 0.0, below, tf.where(coord > last, above, coord))
    return tf.clip_by_value(coord, 0.0, last)


def _warp(images: tf.Tensor, transforms: tf.Tensor, fill_mode: str) -> tf.Tensor:
    """Bilinear resampling of ``(B, H, W, C)`` images (uint8 or float) through ``(B, 8)``
    output-to-input rows, to float32: the arithmetic of ``ImageProjectiveTransformV3``, written
    as whole-batch gathers.

    Compiled by XLA (see :data:`_compiled_warp`), the coordinates, the four reads and the
    blend of every pixel fuse into one loop, about five times faster on a CPU than TensorFlow's
    own kernel, which interpolates pixel by pixel.
    """
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    batch = tf.shape(images)[0]
    t = transforms[:, :, None, None]
    ys = tf.range(height, dtype=tf.float32)[None, :, None]
    xs = tf.range(width, dtype=tf.float32)[None, None, :]
    projection = t[:, 6] * xs + t[:, 7] * ys + 1.0
    x = _map_coordinate((t[:, 0] * xs + t[:, 1] * ys + t[:, 2]) / projection, width, fill_mode)
    y = _map_coordinate((t[:, 3] * xs + t[:, 4] * ys + t[:, 5]) / projection, height, fill_mode)
    x0, y0 = tf.floor(x), tf.floor(y)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    flat = tf.reshape(images, [-1, channels])
    first = (tf.range(batch) * (height * width))[:, None, None]

    def read(row: tf.Tensor, col: tf.Tensor) -> tf.Tensor:
        inside = (row >= 0.0) & (row <= height - 1.0) & (col >= 0.0) & (col <= width - 1.0)
        r = tf.cast(tf.clip_by_value(row, 0.0, height - 1.0), tf.int32)
        c = tf.cast(tf.clip_by_value(col, 0.0, width - 1.0), tf.int32)
        # the fill value (0) wherever a neighbour lies outside the image
        pixels = tf.cast(tf.gather(flat, first + r * width + c), tf.float32)
        return pixels * tf.cast(inside, tf.float32)[..., None]

    top = read(y0, x0) * (1.0 - fx) + read(y0, x0 + 1.0) * fx
    bottom = read(y0 + 1.0, x0) * (1.0 - fx) + read(y0 + 1.0, x0 + 1.0) * fx
    return top * (1.0 - fy) + bottom * fy


_compiled_warp = tf.function(_warp, jit_compile=True)


def augment_batch(images: tf.Tensor, config: AugmentConfig, seed: tf.Tensor) -> tf.Tensor:
    """Warp a batch ``(B, H, W, C)`` once per image with its own random affine; float32 out.

    A uint8 batch is read as it is: the cast to float32 happens in the warp's own loop.
    """
    height, width = int(images.shape[1]), int(images.shape[2])
    transforms = random_transforms(tf.shape(images)[0], height, width, config, seed)
    return _compiled_warp(images, transforms, config.fill_mode)


def is_identity(config: AugmentConfig) -> bool:
    """True when the config asks for no augmentation at all."""
    return not (config.rotation_degrees or config.width_shift or config.height_shift
                or config.shear or config.zoom or config.horizontal_flip)
