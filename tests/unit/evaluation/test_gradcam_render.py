"""The Grad-CAM pictures people read: in the report's grid, the film itself beside the heat map
over it and a colour bar; in the review app, the same overlay and bar, drawn by the same code."""

from __future__ import annotations

import hashlib
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from medimg.bundle import BundleMeta, ModelBundle
from medimg.config import parse_config
from medimg.evaluation.plots import draw_gradcam_grid, plot_gradcam_grid
from medimg.review.inference import heatmap, heatmap_png, model_input, predict
from medimg.review.live_model import Served
from medimg.serving.gradcam import HEATMAP_ALPHA, case_layout, render_case
from medimg.training.models import build_model

JET = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_JET)[:, 0, ::-1]


def _films(channels: int, size: int = 28, n: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    """Textured films and maps that are zero on the left half and at least 0.3 on the right."""
    rng = np.random.default_rng(channels)
    cases = []
    for _ in range(n):
        film = rng.integers(0, 256, (size, size, channels), dtype=np.uint8)
        cam = np.zeros((size, size), np.float32)
        cam[:, size // 2:] = rng.uniform(0.3, 1.0, (size, size - size // 2))
        cases.append((film, cam))
    return cases


def _enlarged(film: np.ndarray, scale: int) -> np.ndarray:
    rgb = np.repeat(film, 3, axis=2) if film.shape[2] == 1 else film
    return np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)


def _grid(channels: int, tmp_path):
    cases = _films(channels)
    rows = {"true positives": [(f, c, f"TP  p=0.9{i}  case{i}") for i, (f, c) in
                               enumerate(cases[:2])],
            "false positives": [(cases[2][0], cases[2][1], "FP  p=0.70  case2")],
            "false negatives": []}
    path = plot_gradcam_grid(rows, "Grad-CAM for P(pneumonia)", tmp_path / "gradcam.png")
    return rows, draw_gradcam_grid(rows, "Grad-CAM for P(pneumonia)"), path


@pytest.mark.parametrize("channels", [1, 3])
def test_the_grid_shows_each_film_exactly_beside_its_translucent_heat_map(channels, tmp_path):
    rows, grid, path = _grid(channels, tmp_path)
    written = np.asarray(Image.open(path).convert("RGB"))
    assert np.array_equal(written, grid.pixels)
    size = 28
    assert grid.scale * size >= 112  # small films are enlarged to a readable panel
    for outcome, cases in rows.items():
        for i, (film, cam, caption) in enumerate(cases):
            left, top = grid.origins[(outcome, i)]
            layout = case_layout(size, grid.scale, caption=caption)
            tile = written[top:top + layout.height, left:left + layout.width]
            expected = _enlarged(film, grid.scale)
            # the film itself, every pixel as the model saw it
            assert np.array_equal(layout.film.of(tile), expected), (outcome, i)
            overlay = layout.overlay.of(tile).astype(int)
            hot = np.repeat(np.repeat(cam > 0, grid.scale, axis=0), grid.scale, axis=1)
            # the film unchanged where the model did not look, coloured where it did ...
            assert np.array_equal(overlay[~hot], expected[~hot])
            assert (np.abs(overlay - expected).max(axis=2)[hot] > 0).all()
            # ... and never so opaque that the film cannot be read through the colour
            assert np.abs(overlay - expected).max() <= HEATMAP_ALPHA * 255 + 1
    assert set(grid.origins) == {("true positives", 0), ("true positives", 1),
                                 ("false positives", 0)}  # an outcome without cases has none


def test_each_case_has_a_colour_bar_from_1_at_the_top_to_0_at_the_bottom(tmp_path):
    rows, grid, _ = _grid(1, tmp_path)
    caption = rows["true positives"][0][2]
    left, top = grid.origins[("true positives", 0)]
    layout = case_layout(28, grid.scale, caption=caption)
    tile = grid.pixels[top:top + layout.height, left:left + layout.width]
    column = layout.bar.of(tile)[:, layout.bar.width // 2].astype(int)
    distance = np.abs(column[:, None, :] - JET[None].astype(int)).sum(axis=2)
    levels = distance.argmin(axis=1)
    assert (distance.min(axis=1) == 0).all()  # every pixel a colour of the map
    assert levels[0] == 255 and levels[-1] == 0
    assert (np.diff(levels) <= 0).all()  # through the colour map, hottest at the top
    # labelled: dark text right of the bar, at its top and its bottom
    labels = tile[layout.bar.top:, layout.bar.left + layout.bar.width:].min(axis=2)
    assert (labels[:14] < 128).any() and (labels[-14:] < 128).any()
    # and the caption above the panels
    assert (tile[:layout.film.top].min(axis=2) < 128).any()


@pytest.mark.parametrize("channels", [1, 3])
def test_the_review_heat_map_is_the_grids_overlay_and_colour_bar(channels):
    model = build_model(32, channels, 2, parse_config({}).model)
    kernel, bias = model.layers[-1].get_weights()
    model.layers[-1].set_weights([np.abs(kernel), bias])  # every feature speaks for disease
    bundle = ModelBundle(model, BundleMeta(["normal", "pneumonia"], 32, channels, {}))
    served = Served(bundle, "medimg-classifier", "1", "champion", "models:/medimg-classifier/1")
    rng = np.random.default_rng(7)
    pixels = rng.integers(20, 230, (40, 40) if channels == 1 else (40, 40, 3), dtype=np.uint8)
    [prediction] = predict(served, [(hashlib.sha256(pixels.tobytes()).hexdigest(), pixels)])

    png = Image.open(io.BytesIO(heatmap_png(served, pixels, prediction)))
    packed = model_input(served, pixels)
    cam = heatmap(served, packed, prediction)
    drawn = render_case(packed, cam, film_panel=False)
    assert cam.max() > 0  # a map to draw, not the film alone
    assert png.mode == "RGB" and png.height == 32  # the film at the size the model saw it
    assert np.array_equal(np.asarray(png), drawn)
    layout = case_layout(32, film_panel=False)
    assert layout.film is None and layout.overlay.left == 0
    # the same overlay the grid draws for the same film and map, there enlarged by whole pixels
    grid = draw_gradcam_grid({"true positives": [(packed, cam, "c")]}, "t")
    left, top = grid.origins[("true positives", 0)]
    in_grid = case_layout(32, grid.scale, caption="c")
    tile = grid.pixels[top:top + in_grid.height, left:left + in_grid.width]
    assert np.array_equal(in_grid.overlay.of(tile)[::grid.scale, ::grid.scale],
                          layout.overlay.of(drawn))
