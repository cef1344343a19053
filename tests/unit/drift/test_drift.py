"""Drift between incoming images and the training reference, on real phantom pixels.

Manifest rows carry the statistics ``image_stats`` computes from ``render_phantom`` images, as
ingest records them; a shifted batch changes what a new scanner or site would change.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from support.manifest import manifest_frame, manifest_row

from medimg.config import DriftConfig, parse_config
from medimg.data.images import image_stats
from medimg.data.phantoms import render_phantom
from medimg.drift.report import compare, split_reference, write_report
from medimg.drift.stats import bin_shares, psi, quantile_edges, usable_bins
from medimg.errors import ConfigError

CONFIG = DriftConfig()


def phantom_rows(seed: int, n: int, size: int = 64, brighten: int = 0, split: str = "train",
                 **overrides):
    """``n`` manifest rows of phantoms from ``seed``, ``brighten`` added to every pixel."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        pixels = render_phantom(rng, size, positive=i % 2 == 1).astype(np.int16)
        pixels = np.clip(pixels + brighten, 0, 255).astype(np.uint8)
        rows.append(manifest_row(f"s{seed}-{size}-{brighten}-{i}", split, width=size,
                                 height=size, **image_stats(pixels), **overrides))
    return manifest_frame(rows)


@pytest.fixture(scope="module")
def reference():
    return phantom_rows(seed=1, n=300)


def test_an_unshifted_batch_from_another_seed_does_not_drift(reference):
    report = compare(reference, phantom_rows(seed=2, n=300), CONFIG)
    assert report.enough_data
    assert report.drifted == []
    assert report.feature("intensity_mean").verdict == "ok"


def test_a_brighter_batch_drifts_in_intensity_only(reference):
    report = compare(reference, phantom_rows(seed=2, n=300, brighten=40), CONFIG)
    assert {"intensity_mean", "intensity_min"} <= set(report.drifted)
    mean = report.feature("intensity_mean")
    # both numbers are reported: a PSI far over the threshold and a KS p-value far under its own
    assert mean.psi > CONFIG.psi_threshold and mean.p_value < CONFIG.p_value
    assert "longest_side" not in report.drifted and "aspect_ratio" not in report.drifted


def test_a_batch_of_another_size_drifts_in_size_not_aspect_ratio(reference):
    report = compare(reference, phantom_rows(seed=2, n=100, size=96), CONFIG)
    assert "longest_side" in report.drifted
    assert report.feature("aspect_ratio").verdict == "ok"


def test_another_modality_and_colour_drift_as_categories():
    dicom = {"format": "dicom", "meta_modality": "DX", "meta_photometric": "MONOCHROME2"}
    ref = phantom_rows(seed=1, n=60, **dicom)
    new = phantom_rows(seed=2, n=60, **{**dicom, "meta_modality": "CR"}, channels=3)
    report = compare(ref, new, CONFIG)
    assert {"modality", "channels"} <= set(report.drifted)
    modality = report.feature("modality")
    assert modality.kind == "categorical" and modality.p_value < 1e-6
    assert report.feature("photometric_interpretation").verdict == "ok"
    assert report.feature("format").verdict == "ok"


def test_dicom_attributes_ingest_does_not_keep_are_not_recorded(reference):
    report = compare(reference, phantom_rows(seed=2, n=40), CONFIG)
    # PNG rows have no DICOM attributes at all, and ingest never keeps Manufacturer
    for name in ("modality", "photometric_interpretation", "manufacturer"):
        assert report.feature(name).verdict == "not recorded"
        assert report.feature(name).psi is None


def test_dicom_images_arriving_in_a_png_reference_drift_in_modality(reference):
    new = phantom_rows(seed=2, n=60, format="dicom", meta_modality="DX")
    report = compare(reference, new, CONFIG)
    assert {"modality", "format"} <= set(report.drifted)


def test_too_few_images_give_no_verdict_however_shifted(reference):
    report = compare(reference, phantom_rows(seed=2, n=10, brighten=80), CONFIG)
    assert report.drifted == []
    assert not report.enough_data
    mean = report.feature("intensity_mean")
    assert mean.verdict == "too few" and mean.n_incoming == 10 and mean.psi is None


def test_the_min_sample_size_comes_from_the_config(reference):
    lenient = DriftConfig(min_samples=5)
    report = compare(reference, phantom_rows(seed=2, n=10, brighten=80), lenient)
    assert "intensity_mean" in report.drifted and report.enough_data


def test_score_distributions_are_compared_when_given(reference):
    rng = np.random.default_rng(0)
    same = (rng.beta(2, 5, 400), rng.beta(2, 5, 400))
    shifted = (rng.beta(2, 5, 400), rng.beta(5, 2, 400))
    assert compare(reference, reference, CONFIG, scores=same).feature("score").verdict == "ok"
    report = compare(reference, reference, CONFIG, scores=shifted)
    assert report.drifted == ["score"]
    assert "score" not in [f.name for f in compare(reference, reference, CONFIG).features]


def test_psi_is_zero_for_equal_shares_and_finite_for_an_empty_bin():
    assert psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.0
    assert psi(np.array([0.5, 0.5]), np.array([0.9, 0.1])) == pytest.approx(
        0.4 * np.log(1.8) - 0.4 * np.log(0.2))
    assert 0 < psi(np.array([1.0, 0.0]), np.array([0.5, 0.5])) < 10


def test_bins_are_reference_quantiles_and_catch_values_beyond_its_range():
    ref = np.arange(100.0)
    edges = quantile_edges(ref, bins=4)
    assert len(edges) == 3
    np.testing.assert_allclose(bin_shares(ref, edges), [0.25, 0.25, 0.25, 0.25])
    assert bin_shares(np.array([-5.0, 500.0]), edges).tolist() == [0.5, 0, 0, 0.5]
    # a constant reference still separates a larger incoming value
    assert bin_shares(np.array([64.0, 96.0]), quantile_edges(np.full(10, 64.0), 10)).tolist() \
        == [0.5, 0.5]


def test_split_reference_takes_train_rows_of_the_reference_version():
    old = [manifest_row("a", "train"), manifest_row("b", "val"), manifest_row("c", "train")]
    new = [manifest_row("d", "train"), manifest_row("e", "test")]
    manifest = manifest_frame(old + new)
    reference, incoming = split_reference(manifest, [r["image_id"] for r in old])
    assert reference["image_id"].tolist() == [old[0]["image_id"], old[2]["image_id"]]
    assert incoming["image_id"].tolist() == [r["image_id"] for r in new]


def test_write_report_writes_json_and_a_plot(reference, tmp_path):
    report = compare(reference, phantom_rows(seed=2, n=60, brighten=40), CONFIG,
                     scores=(np.linspace(0, 1, 60), np.linspace(0, 1, 60) ** 2))
    json_path, plot_path = tmp_path / "reports" / "drift.json", tmp_path / "plots" / "drift.png"
    write_report(report, json_path, plot_path)
    written = json.loads(json_path.read_text())
    assert written == json.loads(json.dumps(report.to_dict()))
    assert "intensity_mean" in written["drifted"] and written["enough_data"] is True
    names = [f["name"] for f in written["features"]]
    assert names[-1] == "score" and "manufacturer" in names
    assert set(written["features"][0]) == {"name", "kind", "statistic", "p_value", "psi",
                                           "verdict", "n_reference", "n_incoming"}
    with Image.open(plot_path) as image:
        assert image.format == "PNG" and image.width > 500
    assert sorted(p.name for p in json_path.parent.iterdir()) == ["drift.json"]


def test_params_yaml_drift_section_is_typed():
    config = parse_config({"drift": {"psi_threshold": 0.1, "min_samples": 50}})
    assert config.drift.psi_threshold == 0.1 and config.drift.min_samples == 50
    assert config.drift.p_value == 0.01 and config.drift.bins == 10


def test_a_small_unshifted_batch_is_not_read_as_drift(reference):
    # 40 images over 10 quantile bins would leave bins empty by chance, and PSI would call it
    # drift; the bins shrink with the smaller sample instead (a team may judge batches of 30)
    report = compare(reference, phantom_rows(seed=5, n=40), DriftConfig(min_samples=30))
    assert report.enough_data and report.drifted == []
    assert usable_bins(10, 300, 40) == 2 and usable_bins(10, 300, 1000) == 10
    with pytest.raises(ConfigError, match=r"drift.p_value = 1.5"):
        parse_config({"drift": {"p_value": 1.5}})
