"""The worker side of ingest: one item decoded, checked and measured, writing nothing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from support.dicoms import write_dicom

from medimg.data.analysis import (
    VALUE_COLUMNS,
    AnalysisOptions,
    analyse,
    has_colour,
    run_analyses,
)
from medimg.data.pseudonyms import PseudonymKeyMissing
from medimg.data.sources import SourceItem

KEY = b"unit-test-key-0123456789abcdef"


def _options(**changes) -> AnalysisOptions:
    values = {"dicom_frame": "middle", "max_pixels": 10_000_000, "min_side": 28, "min_std": 1.0,
              "key": KEY, "allow_burned_in": False}
    return AnalysisOptions(**{**values, **changes})


def _png(path, pixels: np.ndarray):
    Image.fromarray(pixels).save(path)
    return path


def _noise(seed: int, size: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8)


def test_an_image_is_measured_for_every_manifest_column(tmp_path):
    result = analyse(_png(tmp_path / "a.png", _noise(1)), None, _options())
    assert result.reject is None and (result.fmt, result.store_suffix) == ("png", ".png")
    assert tuple(result.values) == VALUE_COLUMNS
    assert (result.values["width"], result.values["height"], result.values["colour"]) == (
        48, 48, False)
    assert result.store_bytes is None  # copies are made by the parent, on write


@pytest.mark.parametrize(("pixels", "code"), [
    (_noise(2, size=16), "too_small"),
    (np.full((48, 48), 128, dtype=np.uint8), "blank"),
])
def test_unusable_images_are_rejected_with_a_code(tmp_path, pixels, code):
    result = analyse(_png(tmp_path / "bad.png", pixels), None, _options())
    assert result.reject is not None and result.reject.code == code
    assert result.values == {}


def test_unreadable_and_undecodable_files_are_rejected_not_raised(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    assert analyse(broken, None, _options()).reject.code != ""
    gone = analyse(tmp_path / "missing.png", None, _options())
    assert gone.reject.code == "unreadable"
    assert gone.reject.message.startswith("cannot read the file")


def test_dicom_is_deidentified_in_the_worker_and_needs_the_key(tmp_path):
    path = write_dicom(tmp_path / "IM0001", phi={"PatientID": "MRN-ZQX-1"})
    result = analyse(path, None, _options())
    assert result.reject is None and result.fmt == "dicom" and result.store_suffix == ".dcm"
    assert result.patient and result.patient.startswith("p-")
    assert "MRN-ZQX-1" in result.identifiers  # in memory only, for the parent to scrub
    assert result.store_bytes and b"MRN-ZQX-1" not in result.store_bytes
    with pytest.raises(PseudonymKeyMissing):
        analyse(path, None, _options(key=None))


def test_only_real_colour_counts_as_colour():
    grey = _noise(3)
    as_rgb = np.repeat(grey[:, :, None], 3, axis=2)
    marked = as_rgb.copy()
    marked[10:13, 10:13] = (255, 0, 0)
    assert not has_colour(grey) and not has_colour(as_rgb) and not has_colour(marked)
    assert has_colour(np.stack([grey, grey // 2, grey // 4], axis=2))


def test_few_items_are_analysed_in_this_process_in_their_order(tmp_path):
    items = [SourceItem(ref=f"{i}.png", path=_png(tmp_path / f"{i}.png", _noise(i)), label="a")
             for i in range(3)]
    items.append(SourceItem(ref="npz#0", path=None, label="a", array=_noise(9, size=32)))
    seen: list[tuple[int, int]] = []
    results = run_analyses(items, _options(), workers=4, progress=lambda d, t: seen.append((d, t)))
    assert [r.fmt for r in results] == ["png", "png", "png", "npz"]
    assert [r.values["phash"] for r in results[:3]] == [
        analyse(item.path, None, _options()).values["phash"] for item in items[:3]
    ]
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
