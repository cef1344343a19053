"""Synthetic chest-radiograph phantoms: determinism, layout, lesion signal, DICOM, arguments."""

from __future__ import annotations

import csv
import itertools
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian

from medimg.data.phantoms import PhantomSummary, generate_phantoms, render_phantom

SMALL = {"n_images": 24, "image_size": 64}


def _files(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in files}


def _rows(root: Path) -> list[dict[str, str]]:
    with (root / "patients.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("image_format", ["png", "dicom"])
def test_same_seed_gives_byte_identical_files(tmp_path: Path, image_format: str) -> None:
    generate_phantoms(tmp_path / "a", seed=7, image_format=image_format, **SMALL)
    generate_phantoms(tmp_path / "b", seed=7, image_format=image_format, **SMALL)

    first, second = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(first) == SMALL["n_images"] + 1  # images plus patients.csv
    assert first.keys() == second.keys()
    for name in first:
        assert first[name] == second[name], name


@pytest.mark.parametrize("image_format", ["png", "dicom"])
def test_different_seed_gives_different_images(tmp_path: Path, image_format: str) -> None:
    generate_phantoms(tmp_path / "a", seed=1, image_format=image_format, **SMALL)
    generate_phantoms(tmp_path / "b", seed=2, image_format=image_format, **SMALL)

    first, second = _files(tmp_path / "a"), _files(tmp_path / "b")
    shared = (first.keys() & second.keys()) - {"patients.csv"}
    assert shared, "two seeds should still share some file names"
    assert all(first[name] != second[name] for name in shared)


def test_layout_counts_and_patients_csv(tmp_path: Path) -> None:
    out = tmp_path / "phantoms"
    summary = generate_phantoms(out, n_images=40, image_size=64, positive_fraction=0.25, seed=3)

    assert summary == PhantomSummary(
        out_dir=out,
        n_images=40,
        n_patients=summary.n_patients,
        counts={"normal": 30, "pneumonia": 10},
        image_format="png",
    )
    on_disk = {
        name: sorted(p.relative_to(out).as_posix() for p in (out / name).iterdir())
        for name in ("normal", "pneumonia")
    }
    assert {name: len(paths) for name, paths in on_disk.items()} == summary.counts
    assert sorted(p.name for p in out.iterdir()) == ["normal", "patients.csv", "pneumonia"]

    rows = _rows(out)
    assert sorted(r["path"] for r in rows) == sorted(on_disk["normal"] + on_disk["pneumonia"])
    labels_by_patient: dict[str, set[str]] = defaultdict(set)
    images_by_patient: dict[str, int] = defaultdict(int)
    for row in rows:
        assert re.fullmatch(r"PT-\d{4}", row["patient_id"]), row
        assert re.fullmatch(r"(normal|pneumonia)/pt\d{4}_img\d{2}\.png", row["path"]), row
        assert row["path"].split("/")[0] == row["label"]
        assert row["path"].split("/")[1][2:6] == row["patient_id"][3:]
        labels_by_patient[row["patient_id"]].add(row["label"])
        images_by_patient[row["patient_id"]] += 1
    assert len(labels_by_patient) == summary.n_patients
    assert all(len(labels) == 1 for labels in labels_by_patient.values())
    assert all(2 <= n <= 6 for n in images_by_patient.values())

    image = np.asarray(Image.open(out / rows[0]["path"]))
    assert image.dtype == np.uint8
    assert image.shape == (64, 64)


def test_patient_films_differ_but_share_anatomy(tmp_path: Path) -> None:
    out = tmp_path / "phantoms"
    generate_phantoms(out, seed=5, images_per_patient=(3, 3), **SMALL)
    by_patient: dict[str, list[np.ndarray]] = defaultdict(list)
    for row in _rows(out):
        by_patient[row["patient_id"]].append(np.asarray(Image.open(out / row["path"]), float))
    films = list(by_patient.values())

    within = np.mean([np.abs(f[0] - f[1]).mean() for f in films])
    between = np.mean([np.abs(a[0] - b[0]).mean() for a, b in itertools.pairwise(films)])
    assert all(not np.array_equal(f[0], f[1]) for f in films)
    assert within < between


def test_opacities_brighten_the_lung_fields() -> None:
    gains = []
    for seed in range(20):
        negative = render_phantom(np.random.default_rng(seed), 64, positive=False).astype(int)
        positive = render_phantom(np.random.default_rng(seed), 64, positive=True).astype(int)
        diff = positive - negative
        assert diff.sum() > 0, seed
        # Opacities sit inside the lungs: the frame (air outside the body) never changes, and the
        # changed pixels are darker than the body on the negative film, i.e. aerated lung.
        assert not diff[:, :3].any() and not diff[:, -3:].any()
        changed = diff >= 3
        if changed.any():
            body = negative > np.percentile(negative, 40)
            assert negative[changed].mean() < negative[body].mean(), seed
        gains.append(diff.mean())
    assert np.mean(gains) > 2.0
    assert sum(g > 1.0 for g in gains) >= 12  # most positives are clearly visible


def test_render_phantom_shape_and_determinism() -> None:
    image = render_phantom(np.random.default_rng(0), 48, positive=True)
    again = render_phantom(np.random.default_rng(0), 48, positive=True)
    assert image.dtype == np.uint8
    assert image.shape == (48, 48)
    assert np.array_equal(image, again)
    assert image.max() > 150 and image.min() < 30  # bright body on a dark background


def test_dicom_reads_back_equal_to_png(tmp_path: Path) -> None:
    generate_phantoms(tmp_path / "png", seed=11, image_format="png", **SMALL)
    summary = generate_phantoms(tmp_path / "dcm", seed=11, image_format="dicom", **SMALL)
    assert summary.image_format == "dicom"

    png_rows, dcm_rows = _rows(tmp_path / "png"), _rows(tmp_path / "dcm")
    assert [r["path"].removesuffix(".png") for r in png_rows] == [
        r["path"].removesuffix(".dcm") for r in dcm_rows
    ]
    instance_uids = set()
    for png_row, dcm_row in zip(png_rows, dcm_rows, strict=True):
        ds = pydicom.dcmread(tmp_path / "dcm" / dcm_row["path"])
        expected = np.asarray(Image.open(tmp_path / "png" / png_row["path"]))
        assert np.array_equal(ds.pixel_array, expected)
        assert ds.PatientID == dcm_row["patient_id"]
        assert str(ds.PatientName) == f"PHANTOM^{dcm_row['patient_id']}"
        assert ds.Modality == "DX"
        assert ds.SOPClassUID == DigitalXRayImageStorageForPresentation
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.PhotometricInterpretation == "MONOCHROME2"
        assert (ds.Rows, ds.Columns, ds.BitsAllocated) == (64, 64, 8)
        instance_uids.add(ds.SOPInstanceUID)
    assert len(instance_uids) == len(dcm_rows)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"n_images": 1}, "n_images"),
        ({"n_images": 3}, "n_images"),  # too few to give both classes whole patients
        ({"image_size": 16}, "image_size"),
        ({"positive_fraction": 0.0}, "positive_fraction"),
        ({"positive_fraction": 1.0}, "positive_fraction"),
        ({"seed": -1}, "seed"),
        ({"image_format": "jpeg"}, "image_format"),
        ({"images_per_patient": (3, 2)}, "images_per_patient"),
        ({"images_per_patient": (0, 2)}, "images_per_patient"),
        ({"class_names": ("same", "same")}, "class_names"),
        ({"class_names": ("normal", "a/b")}, "class_names"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(
    tmp_path: Path, kwargs: dict[str, object], argument: str
) -> None:
    arguments = {**SMALL, **kwargs}
    with pytest.raises(ValueError, match=argument):
        generate_phantoms(tmp_path / "out", **arguments)
    assert not (tmp_path / "out").exists()


def test_refuses_a_folder_that_already_holds_files(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(ValueError, match="out_dir"):
        generate_phantoms(tmp_path, **SMALL)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_render_phantom_rejects_small_images() -> None:
    with pytest.raises(ValueError, match="image_size"):
        render_phantom(np.random.default_rng(0), 31, positive=False)
