"""Every PNG medimg writes holds pixels only: no text, time, EXIF or colour-profile chunks that
could carry a name, a path, a date or the software that made it."""

from __future__ import annotations

import base64
import inspect
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from medimg.config import parse_config
from medimg.data.images import decode_image
from medimg.data.phantoms import phantom_png
from medimg.evaluation import plots
from medimg.registry.stage import _input_example

# Critical chunks, and ancillary ones that describe how to show the pixels and nothing else.
PIXEL_CHUNKS = {"IHDR", "PLTE", "IDAT", "IEND", "tRNS", "pHYs", "sBIT", "gAMA", "sRGB", "cHRM",
                "bKGD"}
SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunks(data: bytes) -> list[str]:
    """The chunk types of a PNG, in order: signature, then length, type, data and CRC each."""
    assert data[:8] == SIGNATURE, "not a PNG"
    types, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        kind = data[at + 4:at + 8]
        body = data[at + 8:at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length:at + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r} at byte {at}"
        types.append(kind.decode("latin-1"))
        at += 12 + length
        if kind == b"IEND":
            break
    assert at == len(data), f"{len(data) - at} bytes after IEND"
    return types


def _every_plot(out: Path) -> dict[str, Path]:
    """Each plot_* function of medimg.evaluation.plots, run once on small data."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 1), dtype=np.uint8)
    cam = rng.random((32, 32))
    curve = {"fpr": [0.0, 0.2, 1.0], "tpr": [0.0, 0.7, 1.0], "recall": [1.0, 0.6, 0.0],
             "precision": [0.5, 0.8, 1.0], "confidence": [0.1, 0.5, 0.9],
             "frequency": [0.2, 0.5, 0.8], "threshold": [0.2, 0.5, 0.8]}
    return {
        "plot_confusion_matrix": plots.plot_confusion_matrix(
            [[5, 1], [2, 4]], ["normal", "pneumonia"], out / "confusion_matrix.png"),
        "plot_roc": plots.plot_roc({"pneumonia": curve}, 0.8, out / "roc.png"),
        "plot_pr": plots.plot_pr({"pneumonia": curve}, 0.7, 0.4, out / "pr.png"),
        "plot_reliability": plots.plot_reliability(curve, 0.05, out / "reliability.png"),
        "plot_threshold_curves": plots.plot_threshold_curves({"pneumonia": curve}, 0.5,
                                                             out / "threshold.png"),
        "plot_training_curves": plots.plot_training_curves(
            {"loss": [0.7, 0.5], "val_loss": [0.8, 0.6], "accuracy": [0.6, 0.7],
             "val_accuracy": [0.5, 0.6]}, out / "training_curves.png"),
        "plot_gradcam_grid": plots.plot_gradcam_grid(
            {"true positives": [(image, cam, "case\np=0.90")], "false positives": []},
            "Grad-CAM", out / "gradcam.png"),
    }


def test_every_plot_png_holds_pixels_only(tmp_path: Path) -> None:
    written = _every_plot(tmp_path)
    # a new plot function is covered here, or this fails
    public = {name for name, f in inspect.getmembers(plots, inspect.isfunction)
              if name.startswith("plot_") and f.__module__ == plots.__name__}
    assert set(written) == public
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written.values())
    for name, path in written.items():
        chunks = png_chunks(path.read_bytes())
        assert chunks[0] == "IHDR" and "IDAT" in chunks and chunks[-1] == "IEND", name
        assert set(chunks) <= PIXEL_CHUNKS, f"{name} wrote {sorted(set(chunks) - PIXEL_CHUNKS)}"
        assert b"atplotlib" not in path.read_bytes(), name  # no "Software: Matplotlib ..."


@pytest.mark.parametrize("channels", [1, 3])
def test_the_logged_input_example_is_a_pixels_only_phantom(channels: int) -> None:
    config = parse_config({"base": {"image_size": 48, "channels": channels, "seed": 5}})
    example = _input_example(config.base)

    assert list(example.columns) == ["image"] and len(example) == 1
    png = base64.b64decode(example["image"].iloc[0], validate=True)
    assert set(png_chunks(png)) <= PIXEL_CHUNKS
    pixels = decode_image(png)  # what the served model decodes
    assert pixels.shape == ((48, 48) if channels == 1 else (48, 48, 3))
    assert png == phantom_png(48, channels, seed=5)  # the phantom generator's, nothing read
