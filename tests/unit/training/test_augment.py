"""The one-warp augmentation: its matrix, its geometry, its random draws and its fill."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from medimg.config import AugmentConfig, parse_config
from medimg.training.augment import (
    affine_matrix,
    augment_batch,
    is_identity,
    random_transforms,
    rotation_matrix,
    shear_matrix,
    shift_matrix,
    transforms_from_params,
    zoom_matrix,
)

SEED = tf.constant([7, 11], dtype=tf.int64)
NONE = {"rotation_degrees": 0, "width_shift": 0, "height_shift": 0, "shear": 0, "zoom": 0,
        "horizontal_flip": False}


def augment_config(**values) -> AugmentConfig:
    """An augment section with everything off except ``values``."""
    return parse_config({"augment": {**NONE, **values}}).augment


def rows(theta=0.0, tx=0.0, ty=0.0, shear=0.0, zx=1.0, zy=1.0, flip=1.0, *, height, width):
    """``transforms_from_params`` for one image (or a batch when given lists)."""
    params = [np.atleast_1d(np.asarray(v, dtype=np.float32))
              for v in (theta, tx, ty, shear, zx, zy, flip)]
    n = max(len(p) for p in params)
    params = [tf.constant(np.broadcast_to(p, (n,))) for p in params]
    return transforms_from_params(*params, height=height, width=width)


def warp(images: np.ndarray, transforms, interpolation="BILINEAR", fill_mode="CONSTANT"):
    """Resample a float batch with 8-entry output->input rows, as augment_batch does."""
    images = tf.constant(images, dtype=tf.float32)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=tf.cast(transforms, tf.float32),
        output_shape=tf.constant(images.shape[1:3], dtype=tf.int32),
        fill_value=tf.constant(0.0),
        interpolation=interpolation,
        fill_mode=fill_mode,
    ).numpy()


def dot(height: int, width: int, row: int, col: int) -> np.ndarray:
    """A black (1, H, W, 1) image with one white pixel."""
    image = np.zeros((1, height, width, 1), np.float32)
    image[0, row, col, 0] = 1.0
    return image


def brightest(image: np.ndarray) -> tuple[int, int]:
    row, col = np.unravel_index(np.argmax(image[0, :, :, 0]), image.shape[1:3])
    return int(row), int(col)


def composed_inverse(theta, tx, ty, shear, zx, zy, height, width, flip):
    """The acceptance formula, inverted numerically: inv(C shift rot shear zoom flip inv(C))."""
    centre = shift_matrix((width - 1) / 2, (height - 1) / 2)
    mirror = np.diag([-1.0, 1.0, 1.0]) if flip else np.eye(3)
    forward = (centre @ shift_matrix(tx, ty) @ rotation_matrix(theta) @ shear_matrix(shear)
               @ zoom_matrix(zx, zy) @ mirror @ np.linalg.inv(centre))
    return np.linalg.inv(forward)


def random_params(rng: np.random.Generator) -> dict[str, float]:
    return {"theta": rng.uniform(-180, 180), "tx": rng.uniform(-10, 10),
            "ty": rng.uniform(-10, 10), "shear": rng.uniform(-0.6, 0.6),
            "zx": rng.uniform(0.5, 1.5), "zy": rng.uniform(0.5, 1.5)}


# --- the matrix ------------------------------------------------------------------------------


def test_part_matrices_move_points_as_documented():
    point = np.array([1.0, 0.0, 1.0])  # one pixel right of the origin
    # counter-clockwise on screen, where rows grow downwards: right turns to up (y = -1)
    np.testing.assert_allclose(rotation_matrix(90) @ point, [0, -1, 1], atol=1e-12)
    np.testing.assert_allclose(shift_matrix(3, -2) @ point, [4, -2, 1])
    np.testing.assert_allclose(shear_matrix(0.5) @ np.array([0.0, 2.0, 1.0]), [1, 2, 1])
    np.testing.assert_allclose(zoom_matrix(2, 3) @ np.array([1.0, 1.0, 1.0]), [2, 3, 1])


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("case", range(5))
def test_affine_matrix_equals_inverted_composition_of_parts(case: int, flip: bool):
    p = random_params(np.random.default_rng(case))
    height, width = 32, 48  # not square, so swapped centre coordinates would show
    got = affine_matrix(p["theta"], p["tx"], p["ty"], p["shear"], p["zx"], p["zy"],
                        height, width, flip=flip)
    expected = composed_inverse(p["theta"], p["tx"], p["ty"], p["shear"], p["zx"], p["zy"],
                                height, width, flip)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(got[2], [0.0, 0.0, 1.0])  # affine: no projective row


def test_transforms_from_params_match_affine_matrix_for_a_batch():
    rng = np.random.default_rng(42)
    height, width = 40, 56
    batch = [random_params(rng) for _ in range(6)]
    flips = [1.0, -1.0, 1.0, -1.0, -1.0, 1.0]
    columns = {key: [p[key] for p in batch] for key in batch[0]}
    got = rows(**columns, flip=flips, height=height, width=width).numpy()
    assert got.shape == (6, 8)
    for i, p in enumerate(batch):
        expected = affine_matrix(p["theta"], p["tx"], p["ty"], p["shear"], p["zx"], p["zy"],
                                 height, width, flip=flips[i] < 0)
        np.testing.assert_allclose(got[i], expected.ravel()[:8], rtol=1e-5, atol=1e-4)


# --- what the warp does to an image ----------------------------------------------------------


def test_shift_moves_content_right_and_down_by_whole_pixels():
    image = dot(32, 32, row=10, col=12)
    moved = warp(image, rows(tx=5, height=32, width=32))
    assert brightest(moved) == (10, 17)
    assert moved.max() == pytest.approx(1.0) and moved.sum() == pytest.approx(1.0)
    assert brightest(warp(image, rows(ty=3, height=32, width=32))) == (13, 12)
    assert brightest(warp(image, rows(tx=-4, ty=-6, height=32, width=32))) == (4, 8)


@pytest.mark.parametrize(("theta", "turns"), [(90, 1), (-90, -1), (180, 2)])
def test_right_angle_rotation_of_a_square_image_is_an_exact_turn(theta: float, turns: int):
    image = np.random.default_rng(0).random((1, 32, 32, 1)).astype(np.float32)
    turned = warp(image, rows(theta=theta, height=32, width=32))
    # np.rot90 turns counter-clockwise as the image is displayed (row 0 at the top)
    np.testing.assert_allclose(turned[0], np.rot90(image[0], turns), atol=1e-4)


def test_rotation_moves_a_known_pixel_counter_clockwise_about_the_centre():
    # centre (15.5, 15.5); (col 20, row 10) is up-right of it and turns to up-left
    turned = warp(dot(32, 32, row=10, col=20), rows(theta=90, height=32, width=32))
    assert brightest(turned) == (11, 10)
    assert turned.max() > 0.99


def test_flip_mirrors_left_and_right():
    image = np.random.default_rng(1).random((1, 24, 32, 1)).astype(np.float32)
    np.testing.assert_array_equal(warp(image, rows(flip=-1, height=24, width=32)),
                                  image[:, :, ::-1])


def test_zoom_two_doubles_distances_from_the_centre():
    # 33x33 has its centre on pixel (16, 16)
    right = warp(dot(33, 33, row=16, col=20), rows(zx=2, zy=2, height=33, width=33))
    assert brightest(right) == (16, 24)
    assert right.max() == pytest.approx(1.0)
    up = warp(dot(33, 33, row=13, col=16), rows(zx=2, zy=2, height=33, width=33))
    assert brightest(up) == (10, 16)
    only_x = warp(dot(33, 33, row=13, col=20), rows(zx=2, zy=1, height=33, width=33))
    assert brightest(only_x) == (13, 24)


def test_shear_slides_rows_below_the_centre_to_the_right():
    # x += s * y about the centre: 4 rows below it, s = 0.5 moves 2 px right; above, left
    below = warp(dot(33, 33, row=20, col=16), rows(shear=0.5, height=33, width=33))
    assert brightest(below) == (20, 18)
    above = warp(dot(33, 33, row=12, col=16), rows(shear=0.5, height=33, width=33))
    assert brightest(above) == (12, 14)


# --- one warp equals the parts one after another ---------------------------------------------

PARTS = {"theta": 12.0, "tx": 2.5, "ty": -1.5, "shear": 0.15, "zx": 1.1, "zy": 0.9}


def part_sequence(flip: bool):
    """Each part alone, in the order the content is transformed: flip, zoom, shear, rotate,
    shift."""
    p = PARTS
    return [
        {"flip": flip},
        {"zx": p["zx"], "zy": p["zy"]},
        {"shear": p["shear"]},
        {"theta": p["theta"]},
        {"tx": p["tx"], "ty": p["ty"]},
    ]


def part_matrix(part: dict, height: int, width: int) -> np.ndarray:
    full = {"theta": 0.0, "tx": 0.0, "ty": 0.0, "shear": 0.0, "zx": 1.0, "zy": 1.0,
            "flip": False, **part}
    return affine_matrix(full["theta"], full["tx"], full["ty"], full["shear"], full["zx"],
                         full["zy"], height, width, flip=full["flip"])


@pytest.mark.parametrize("flip", [False, True])
def test_points_map_the_same_through_one_matrix_as_through_the_parts(flip: bool):
    height, width = 48, 64
    one = affine_matrix(PARTS["theta"], PARTS["tx"], PARTS["ty"], PARTS["shear"], PARTS["zx"],
                        PARTS["zy"], height, width, flip=flip)
    points = np.vstack([np.random.default_rng(3).uniform(0, 64, (2, 50)), np.ones(50)])
    # warping by A1 then by A2 samples the original at A1 @ A2 @ p, so the part applied first
    # to the content stands leftmost
    mapped = points
    for part in reversed(part_sequence(flip)):
        mapped = part_matrix(part, height, width) @ mapped
    np.testing.assert_allclose(one @ points, mapped, atol=1e-9)


@pytest.mark.parametrize("flip", [False, True])
def test_one_warp_gives_the_image_of_five_warps_on_a_linear_ramp(flip: bool):
    # bilinear interpolation reproduces a linear ramp exactly, so away from the borders one
    # warp and five warps must agree, and both equal the ramp at the mapped coordinates
    height = width = 64
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    ramp = (2 * x + 3 * y + 10)[None, :, :, None].astype(np.float32)
    one = affine_matrix(PARTS["theta"], PARTS["tx"], PARTS["ty"], PARTS["shear"], PARTS["zx"],
                        PARTS["zy"], height, width, flip=flip)
    once = warp(ramp, one.ravel()[None, :8])
    stepwise = ramp
    for part in part_sequence(flip):
        stepwise = warp(stepwise, part_matrix(part, height, width).ravel()[None, :8])
    src_x = one[0, 0] * x + one[0, 1] * y + one[0, 2]
    src_y = one[1, 0] * x + one[1, 1] * y + one[1, 2]
    inner = np.s_[0, 20:44, 20:44, 0]
    np.testing.assert_allclose(once[inner], (2 * src_x + 3 * src_y + 10)[20:44, 20:44],
                               atol=1e-2)
    np.testing.assert_allclose(once[inner], stepwise[inner], atol=1e-2)


def test_one_warp_is_sharper_than_chaining_the_parts():
    # the reason for composing: each bilinear resampling blurs, so chaining four loses detail
    height = width = 64
    noise = np.random.default_rng(5).random((1, height, width, 1)).astype(np.float32)
    one = affine_matrix(PARTS["theta"], PARTS["tx"], PARTS["ty"], PARTS["shear"], PARTS["zx"],
                        PARTS["zy"], height, width)
    once = warp(noise, one.ravel()[None, :8])
    stepwise = noise
    for part in part_sequence(flip=False):
        stepwise = warp(stepwise, part_matrix(part, height, width).ravel()[None, :8])
    inner = np.s_[0, 16:48, 16:48, 0]
    assert stepwise[inner].std() < 0.85 * once[inner].std()


# --- random draws ----------------------------------------------------------------------------


def test_random_transforms_repeat_for_a_seed_and_change_with_it():
    config = AugmentConfig()
    first = random_transforms(16, 32, 32, config, SEED).numpy()
    again = random_transforms(16, 32, 32, config, SEED).numpy()
    other = random_transforms(16, 32, 32, config, tf.constant([7, 12], tf.int64)).numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    # and each image of a batch gets its own transform
    assert len({tuple(np.round(r, 6)) for r in first}) == 16


def test_rotation_angles_stay_within_the_configured_range_and_use_it():
    t = random_transforms(256, 32, 32, augment_config(rotation_degrees=20), SEED).numpy()
    angles = np.degrees(np.arctan2(t[:, 3], t[:, 0]))
    assert np.all(np.abs(angles) <= 20 + 1e-3)
    assert angles.min() < -15 and angles.max() > 15
    # rotation alone: an orthonormal matrix, no zoom or shear crept in
    np.testing.assert_allclose(t[:, 0] ** 2 + t[:, 3] ** 2, 1.0, atol=1e-5)
    np.testing.assert_allclose(t[:, 1], -t[:, 3], atol=1e-6)


def test_shifts_are_fractions_of_their_own_side():
    height, width = 32, 64
    config = augment_config(width_shift=0.25, height_shift=0.1)
    t = random_transforms(256, height, width, config, SEED).numpy()
    tx, ty = -t[:, 2], -t[:, 5]  # a pure shift's inverse offsets are -tx, -ty
    np.testing.assert_allclose(t[:, [0, 4]], 1.0, atol=1e-6)
    assert np.all(np.abs(tx) <= 0.25 * width + 1e-3) and np.abs(tx).max() > 0.2 * width
    assert np.all(np.abs(ty) <= 0.1 * height + 1e-3) and np.abs(ty).max() > 0.08 * height
    assert tx.min() < 0 < tx.max()


def test_shear_and_zoom_stay_within_the_configured_ranges():
    shear = random_transforms(256, 32, 32, augment_config(shear=0.3), SEED).numpy()[:, 1]
    assert np.all(np.abs(shear) <= 0.3 + 1e-6) and np.abs(shear).max() > 0.25
    zoomed = random_transforms(256, 32, 32, augment_config(zoom=0.2), SEED).numpy()
    zx, zy = 1 / zoomed[:, 0], 1 / zoomed[:, 4]
    for z in (zx, zy):
        assert np.all((z >= 0.8 - 1e-5) & (z <= 1.2 + 1e-5))
        assert z.min() < 0.85 and z.max() > 1.15
    assert not np.allclose(zx, zy)  # drawn per axis


def test_flip_mirrors_about_half_the_images_and_only_when_asked():
    flipped = random_transforms(256, 32, 32, augment_config(horizontal_flip=True), SEED).numpy()
    np.testing.assert_allclose(np.abs(flipped[:, 0]), 1.0)
    assert 0.3 < np.mean(flipped[:, 0] < 0) < 0.7
    # with every other augmentation on but no flip, no image comes out mirrored
    plain = random_transforms(256, 32, 32, AugmentConfig(rotation_degrees=180), SEED).numpy()
    determinant = plain[:, 0] * plain[:, 4] - plain[:, 1] * plain[:, 3]
    assert np.all(determinant > 0)


# --- augment_batch ---------------------------------------------------------------------------


def test_all_zero_config_is_identity_and_leaves_images_unchanged():
    config = augment_config()
    assert is_identity(config)
    images = np.random.default_rng(2).random((4, 32, 32, 3)).astype(np.float32) * 255
    out = augment_batch(tf.constant(images), config, SEED).numpy()
    np.testing.assert_array_equal(out, images)


@pytest.mark.parametrize("setting", [{"rotation_degrees": 5}, {"width_shift": 0.1},
                                     {"height_shift": 0.1}, {"shear": 0.1}, {"zoom": 0.1},
                                     {"horizontal_flip": True}])
def test_any_single_augmentation_is_not_identity(setting: dict):
    assert not is_identity(augment_config(**setting))
    assert not is_identity(AugmentConfig())  # the defaults augment


def test_augment_batch_changes_images_reproducibly_and_keeps_shape():
    images = tf.constant(np.random.default_rng(3).random((4, 32, 32, 1)), tf.float32)
    config = AugmentConfig()
    out = augment_batch(images, config, SEED)
    assert out.shape == images.shape and out.dtype == tf.float32
    np.testing.assert_array_equal(out.numpy(), augment_batch(images, config, SEED).numpy())
    assert not np.allclose(out.numpy(), images.numpy())


def test_augment_batch_runs_in_a_graph_with_an_unknown_batch_size():
    config = AugmentConfig()

    @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 1], tf.float32)])
    def graph(images):
        return augment_batch(images, config, SEED)

    images = tf.constant(np.random.default_rng(4).random((3, 32, 32, 1)), tf.float32)
    np.testing.assert_allclose(graph(images).numpy(), augment_batch(images, config, SEED).numpy(),
                               atol=1e-4)  # graph and eager kernels round differently


def test_constant_fill_blackens_what_a_strong_shift_uncovers():
    config = augment_config(width_shift=0.5, height_shift=0.5, fill_mode="constant")
    images = tf.ones((8, 32, 32, 1))
    out = augment_batch(images, config, SEED).numpy()[..., 0]
    t = random_transforms(8, 32, 32, config, SEED).numpy()
    y, x = np.mgrid[0:32, 0:32]
    for i in range(8):
        src_x, src_y = x + t[i, 2], y + t[i, 5]  # pure shift: input = output - (tx, ty)
        outside = (src_x < -1) | (src_x > 32) | (src_y < -1) | (src_y > 32)
        inside = (src_x >= 0) & (src_x <= 31) & (src_y >= 0) & (src_y <= 31)
        np.testing.assert_array_equal(out[i][outside], 0.0)
        np.testing.assert_allclose(out[i][inside], 1.0, atol=1e-6)
    # the draw really shifted far: some corners are black
    corners = out[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert np.any(corners == 0.0)


def test_nearest_fill_leaves_no_black_border():
    config = augment_config(width_shift=0.5, height_shift=0.5, fill_mode="nearest")
    out = augment_batch(tf.ones((8, 32, 32, 1)), config, SEED).numpy()
    np.testing.assert_allclose(out, 1.0, atol=1e-6)



@pytest.mark.parametrize("fill_mode", ["nearest", "constant", "reflect", "wrap"])
@pytest.mark.parametrize("shape", [(5, 40, 56, 1), (3, 31, 17, 3)])
def test_warp_resamples_as_tensorflows_projective_transform_does(fill_mode: str, shape: tuple):
    """The XLA warp is a faster route to the very pixels ``ImageProjectiveTransformV3`` gives,
    also where strong draws reach far outside the image in each fill mode."""
    images = np.random.default_rng(9).uniform(0, 255, shape).astype(np.float32)
    config = augment_config(rotation_degrees=40, width_shift=0.9, height_shift=0.9, shear=0.5,
                            zoom=0.6, horizontal_flip=True, fill_mode=fill_mode)
    transforms = random_transforms(shape[0], shape[1], shape[2], config, SEED)
    expected = warp(images, transforms, fill_mode=fill_mode.upper())
    out = augment_batch(tf.constant(images), config, SEED).numpy()
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, atol=0.02)  # of 255: rounding only
    assert not np.allclose(out, images)
