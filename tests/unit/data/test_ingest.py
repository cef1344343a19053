from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import medimg_cli
from PIL import Image
from support.dicoms import PHI_VALUES, write_dicom
from support.ingesting import TEST_KEY, ingest

from medimg.data.images import read_image
from medimg.data.manifest import COLUMNS, load_manifest
from medimg.data.phantoms import generate_phantoms
from medimg.data.private import Originals
from medimg.data.pseudonyms import PseudonymKeyMissing, pseudonymise
from medimg.errors import DataError
from medimg.validation.contract import validate_manifest
from medimg.validation.stage import run_validate

KEY = TEST_KEY


def _png(path: Path, value: int, size: int = 48, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    shape = (size, size) if mode == "L" else (size, size, 3)
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(path)
    return path


def _two_class_source(root: Path, per_class: int) -> Path:
    """``root/normal`` and ``root/pneumonia`` with ``per_class`` distinct PNGs each."""
    for i in range(per_class):
        _png(root / "normal" / f"n{i}.png", i)
        _png(root / "pneumonia" / f"p{i}.png", 10 + i)
    return root


def _log(ws) -> list[dict]:
    path = ws.quarantine_dir / "quarantine.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_manifest_has_one_row_per_image_with_every_column(make_workspace, phantom_source):
    ws = make_workspace()
    summary = ingest(ws, [ws.raw_dir])
    manifest = load_manifest(ws.manifest_path)
    files = sorted(p for p in phantom_source.rglob("*.png"))
    assert summary.ingested == len(files) == len(manifest)
    assert list(manifest.columns) == list(COLUMNS)
    row = manifest.iloc[0]
    # later stages read a pixels-only copy in the store; the reference names the file with its
    # patient id (the phantoms are named after their patients) replaced by the pseudonym
    stored = ws.resolve(row["source_path"])
    assert stored.is_relative_to(ws.store_dir)
    [original] = Originals(ws).originals_of(row["source_ref"])
    source = Path(original)
    assert source.is_relative_to(ws.raw_dir) and source.name.split("_")[0] not in row["source_ref"]
    assert row["source_ref"] == ws.relative(source).replace(
        source.name.split("_")[0], row["patient_id"])
    assert row["image_id"] == hashlib.sha256(source.read_bytes()).hexdigest()
    np.testing.assert_array_equal(read_image(stored), read_image(source))
    assert row["label"] == source.parent.name
    assert (row["width"], row["height"], row["channels"], row["bit_depth"]) == (64, 64, 1, 8)
    assert (row["format"], row["label_source"], row["split_source"]) == (
        "png",
        "folder",
        "assigned",
    )
    pixels = read_image(source)
    assert row["intensity_max"] == pixels.max() and row["intensity_min"] == pixels.min()
    assert row["intensity_mean"] == pytest.approx(pixels.mean())
    assert len(row["phash"]) == 16 and int(row["phash"], 16) >= 0
    # patient ids are pseudonymised with the key; the originals appear nowhere in the manifest
    patients = pd.read_csv(phantom_source / "patients.csv")
    truth = dict(zip(patients["path"], patients["patient_id"], strict=True))
    original = truth[source.relative_to(ws.raw_dir).as_posix()]
    assert row["patient_id"] == pseudonymise(original, KEY) and row["patient_source"] == "source"
    assert not set(patients["patient_id"]) & set(manifest["patient_id"])
    # all images of a patient share one split, and every split has both classes
    assert (manifest.groupby("patient_id")["split"].nunique() == 1).all()
    assert manifest.groupby("split")["label"].nunique().to_dict() == {
        "train": 2,
        "val": 2,
        "test": 2,
    }
    assert summary.balanced


def test_reingest_is_idempotent_and_appending_moves_nothing(make_workspace, tmp_path):
    ws = make_workspace()
    ingest(ws, [ws.raw_dir])
    before = load_manifest(ws.manifest_path).set_index("image_id")["split"]
    stamp = ws.manifest_path.stat().st_mtime_ns
    again = ingest(ws, [ws.raw_dir])
    assert again.ingested == 0 and again.already_present == len(before)
    assert ws.manifest_path.stat().st_mtime_ns == stamp  # nothing new, nothing rewritten
    extra = tmp_path / "extra"
    for i in range(12):
        _png(extra / ("normal" if i % 2 else "pneumonia") / f"new{i}.png", 1000 + i)
    added = ingest(ws, [extra])
    after = load_manifest(ws.manifest_path).set_index("image_id")["split"]
    assert added.ingested == 12 and len(after) == len(before) + 12
    assert after.loc[before.index].equals(before)


def test_every_quarantine_reason_is_recorded_and_nothing_is_lost(make_workspace, tmp_path):
    ws = make_workspace({"data": {"max_pixels": 100 * 100}}, with_data=False)
    src = _two_class_source(tmp_path / "src", 3)
    good = _png(tmp_path / "x.png", 99).read_bytes()
    (src / "normal" / "truncated.png").write_bytes(good[:60])
    (src / "normal" / "empty.png").write_bytes(b"")
    (src / "normal" / "words.png").write_bytes(b"this is not a PNG at all " * 8)
    (src / "normal" / "notes.txt").write_text("not an image")
    Image.fromarray(np.full((64, 64), 128, np.uint8)).save(src / "normal" / "blank.png")
    _png(src / "normal" / "tiny.png", 5, size=8)
    _png(src / "pneumonia" / "huge.png", 6, size=101)
    _png(src / "loose.png", 7)  # in no class folder
    shutil.copyfile(src / "normal" / "n0.png", src / "pneumonia" / "copy_of_n0.png")
    summary = ingest(ws, [src])

    reasons = {Path(q.path).name: (q.code, q.message) for q in summary.quarantined}
    assert reasons["truncated.png"][0] == "corrupt"
    assert reasons["truncated.png"][1].startswith("truncated or corrupt")
    assert reasons["empty.png"] == ("empty", "empty file (0 bytes)")
    assert reasons["words.png"] == ("not_an_image", "not a recognised image format")
    assert reasons["notes.txt"] == ("not_an_image", "not an image file")
    assert reasons["blank.png"][0] == "blank" and reasons["blank.png"][1].startswith("blank")
    assert reasons["tiny.png"][0] == "too_small"
    assert reasons["huge.png"][0] == "too_many_pixels"
    assert reasons["loose.png"][0] == "unlabelled"
    assert reasons["copy_of_n0.png"][0] == "label_conflict"
    assert summary.ingested == 6 and summary.balanced
    # quarantined by reference: nothing is copied, the originals stay, and the log gives each
    # file's sha256 and size
    assert [p.name for p in ws.quarantine_dir.iterdir()] == ["quarantine.jsonl"]
    for entry in summary.quarantined:
        original = ws.resolve(entry.path)
        assert original.exists()
        assert entry.sha256 == hashlib.sha256(original.read_bytes()).hexdigest()
        assert entry.size == original.stat().st_size
    # a re-ingest finds the same files, counts them again, and logs nothing twice
    again = ingest(ws, [src])
    assert len(again.quarantined) == 9 and again.ingested == 0 and again.balanced
    assert len(_log(ws)) == 9


def test_exact_duplicates_in_one_split_are_counted_not_added(make_workspace, tmp_path):
    ws = make_workspace(with_data=False)
    src = _two_class_source(tmp_path / "src", 3)
    shutil.copyfile(src / "normal" / "n0.png", src / "normal" / "n0_again.png")
    summary = ingest(ws, [src])
    assert summary.duplicates == 1 and summary.ingested == 6 and summary.balanced
    assert len(load_manifest(ws.manifest_path)) == 6


def test_predefined_split_folders_are_honoured_and_val_is_carved_from_train(
    make_workspace, tmp_path
):
    ws = make_workspace(with_data=False)
    src = tmp_path / "kaggle"
    for i in range(20):
        _png(src / "Training" / "NORMAL" / f"n{i}.png", i)
        _png(src / "Training" / "PNEUMONIA" / f"p{i}.png", 100 + i)
    for i in range(4):
        _png(src / "Testing" / "NORMAL" / f"tn{i}.png", 200 + i)
        _png(src / "Testing" / "PNEUMONIA" / f"tp{i}.png", 300 + i)
    ingest(ws, [src])
    manifest = load_manifest(ws.manifest_path)
    test = manifest[manifest["source_ref"].str.contains("/Testing/")]
    assert set(test["split"]) == {"test"} and set(test["split_source"]) == {"predefined"}
    train = manifest[manifest["source_ref"].str.contains("/Training/")]
    # val is carved out of the predefined train split, per class: with the tiny params'
    # fractions 0.5 / 0.25 / 0.25 that is 0.25 / 0.75 of 20, 6.7 images
    counts = train.groupby(["split", "label"]).size().to_dict()
    assert counts[("val", "normal")] == 7 and counts[("val", "pneumonia")] == 7
    assert counts[("train", "normal")] + counts[("val", "normal")] == 20
    assert set(train.loc[train["split"] == "val", "split_source"]) == {"assigned"}


def _brain_mri_layout(root: Path) -> Path:
    """``root/Training/<class>`` and ``root/Testing/<class>``, one content in both splits."""
    for i in range(12):
        _png(root / "Training" / "normal" / f"n{i}.png", i)
        _png(root / "Training" / "pneumonia" / f"p{i}.png", 100 + i)
    for i in range(3):
        _png(root / "Testing" / "normal" / f"tn{i}.png", 200 + i)
        _png(root / "Testing" / "pneumonia" / f"tp{i}.png", 300 + i)
    shutil.copyfile(root / "Training" / "normal" / "n0.png", root / "Testing" / "normal" / "n0.png")
    return root


_SPLIT_VIEW = ["source_ref", "image_id", "label", "patient_id", "split", "split_source"]


@pytest.mark.parametrize("order", ["Training Testing", "Testing Training"])
def test_split_folders_given_as_sources_are_those_splits(make_workspace, tmp_path, order):
    data = _brain_mri_layout(tmp_path / "DATA")
    parent_ws = make_workspace(with_data=False, name="parent")
    ingest(parent_ws, [data])
    ws = make_workspace(with_data=False, name="folders")
    summary = ingest(ws, [data / name for name in order.split()])

    manifest = load_manifest(ws.manifest_path)
    by_parent = load_manifest(parent_ws.manifest_path)
    # the same manifest as when DATA is given: the published test split is kept, and val is
    # carved out of train
    pd.testing.assert_frame_equal(
        manifest[_SPLIT_VIEW].reset_index(drop=True), by_parent[_SPLIT_VIEW].reset_index(drop=True)
    )
    testing = manifest[manifest["source_ref"].str.contains("/Testing/")]
    assert set(testing["split"]) == {"test"} and set(testing["split_source"]) == {"predefined"}
    assert set(manifest["split"]) == {"train", "val", "test"}
    assert summary.splits_by_source == {
        ws.relative(data / "Testing"): {"test": 7},
        ws.relative(data / "Training"): {"train": 24},
    }
    # the copy in both folders is leakage in the source, reported as for DATA
    assert summary.cross_split_duplicates == 1
    report = run_validate(ws, ws.config, raise_on_failure=False)
    assert "no_exact_duplicate_across_splits" in {c.name for c in report.failed_critical}


def test_dedupe_of_split_folder_sources_keeps_the_test_copy(make_workspace, tmp_path):
    data = _brain_mri_layout(tmp_path / "DATA")
    ws = make_workspace(with_data=False)
    summary = ingest(ws, [data / "Testing", data / "Training"], dedupe=True)
    [removed] = summary.removed_by_dedupe
    assert "/Training/" in removed.path and removed.code == "duplicate"
    manifest = load_manifest(ws.manifest_path)
    copy = manifest[manifest["image_id"] == removed.sha256]
    assert list(copy["split"]) == ["test"] and copy["source_ref"].str.contains("/Testing/").all()
    assert summary.cross_split_duplicates == 0


def test_ingest_prints_the_split_each_source_gave(make_workspace, tmp_path):
    data = _brain_mri_layout(tmp_path / "DATA")
    ws = make_workspace(with_data=False)
    result = medimg_cli("ingest", str(data / "Training"), str(data / "Testing"), cwd=ws.root)
    assert result.returncode == 0, result.stderr
    out = result.stdout.replace("\n", " ")
    assert f"{data / 'Training'} gave split train (24 files)" in out
    assert f"{data / 'Testing'} gave split test (7 files)" in out
    assert "1 image(s) are in more than one split (leakage in the source)" in out


def test_split_folders_mixed_with_class_folders_are_refused(make_workspace, tmp_path):
    ws = make_workspace(with_data=False)
    src = tmp_path / "src"
    _png(src / "train" / "normal" / "a.png", 1)
    _png(src / "normal" / "b.png", 2)
    with pytest.raises(DataError, match="mixes split folders"):
        ingest(ws, [src])


@pytest.fixture(scope="module")
def phantom_pngs(tmp_path_factory) -> list[Path]:
    out = tmp_path_factory.mktemp("ph") / "p"
    generate_phantoms(out, n_images=8, image_size=128, seed=11)
    return sorted(out.rglob("*.png"))


def test_cross_split_duplicates_are_kept_for_the_contract_then_deduped(
    make_workspace, tmp_path, phantom_pngs
):
    ws = make_workspace(with_data=False)
    src = tmp_path / "src"
    (src / "train" / "normal").mkdir(parents=True)
    (src / "test" / "normal").mkdir(parents=True)
    for i, path in enumerate(phantom_pngs[:6]):
        shutil.copyfile(path, src / "train" / "normal" / f"t{i}.png")
    shutil.copyfile(phantom_pngs[6], src / "test" / "normal" / "other.png")
    # an exact copy of t0, and a resized, re-encoded near-copy of t1, in the test split
    shutil.copyfile(src / "train" / "normal" / "t0.png", src / "test" / "normal" / "t0_copy.png")
    with Image.open(src / "train" / "normal" / "t1.png") as image:
        image.resize((96, 96), Image.Resampling.LANCZOS).save(
            src / "test" / "normal" / "t1_small.jpg", quality=75
        )
    summary = ingest(ws, [src])
    manifest = load_manifest(ws.manifest_path)
    assert summary.cross_split_duplicates == 1  # the exact copy: one image id in two splits
    t0 = manifest[
        manifest["image_id"]
        == manifest.loc[manifest["source_ref"].str.endswith("t0.png"), "image_id"].iloc[0]
    ]
    assert len(t0) == 2 and "test" in set(t0["split"]) and t0["split"].nunique() == 2
    # the contract fails on both, naming the pairs
    report = run_validate(ws, ws.config, raise_on_failure=False)
    failed = {c.name: c for c in report.failed_critical}
    assert {"no_exact_duplicate_across_splits", "no_near_duplicate_across_splits"} <= set(failed)
    t1_id = manifest.loc[manifest["source_ref"].str.endswith("t1.png"), "image_id"].iloc[0]
    assert t1_id in failed["no_near_duplicate_across_splits"].offending_ids

    deduped = ingest(ws, [src], dedupe=True)
    after = load_manifest(ws.manifest_path)
    dropped = sorted(Path(e.path).name for e in deduped.removed_by_dedupe)
    assert dropped == ["t0.png", "t1.png"]  # the train/val copies go; the test copies stay
    assert after["source_ref"].str.endswith("t0_copy.png").any()
    assert after["source_ref"].str.endswith("t1_small.jpg").any()
    assert (after.groupby("image_id")["split"].nunique() == 1).all()
    assert {e.code for e in deduped.removed_by_dedupe} == {"duplicate"}
    reasons = [e.message for e in deduped.removed_by_dedupe]
    assert any(r.startswith("exact duplicate") for r in reasons)
    assert any(r.startswith("near (distance") for r in reasons)
    # set aside for good: a plain re-ingest does not bring them back
    again = ingest(ws, [src])
    assert again.ingested == 0 and len(load_manifest(ws.manifest_path)) == len(after)
    assert (src / "train" / "normal" / "t0.png").exists()  # nothing the user gave is deleted


def test_label_list_brings_patients_splits_and_metadata(make_workspace, tmp_path):
    ws = make_workspace({"data": {"metadata_columns": ["sex", "Site"]}}, with_data=False)
    src = tmp_path / "list"
    rows = []
    for i in range(8):
        _png(src / "images" / f"{i}.png", 40 + i)
        rows.append(
            {
                "Image": f"images/{i}.png",
                "Label": i % 2,
                "Patient ID": f"MRN{i // 2}",
                "Sex": "F" if i < 4 else "M",
                "Site": "north",
                "Patient Name": f"DOE^JANE{i}",
                "DOB": "19700101",
                "Scanner": "X100",
                "split": "",
            }
        )
    rows[0]["split"] = "test"
    rows.append(
        {
            "Image": "images/gone.png",
            "Label": 1,
            "Patient ID": "MRN9",
            "Sex": "F",
            "Site": "south",
            "Patient Name": "ROE^RICHARD",
            "DOB": "19800101",
            "Scanner": "X100",
            "split": "",
        }
    )
    pd.DataFrame(rows).to_csv(src / "labels.csv", index=False)
    summary = ingest(ws, [src / "labels.csv"])
    manifest = load_manifest(ws.manifest_path).set_index("source_ref")
    first = manifest.loc[ws.relative(src / "images" / "0.png")]
    assert first["label"] == "normal"  # index 0 of base.class_names
    assert first["split"] == "test" and first["split_source"] == "predefined"
    assert first["patient_id"] == pseudonymise("MRN0", KEY)
    assert first["label_source"] == "csv:labels.csv"
    assert (first["meta_sex"], first["meta_site"]) == ("F", "north")
    # only the allow-listed columns are kept; the others are named once and dropped
    assert [c for c in manifest.columns if c.startswith("meta_")] == ["meta_sex", "meta_site"]
    assert summary.dropped_columns == ["DOB", "Patient Name", "Scanner"]
    cells = " ".join(manifest.reset_index().astype(str).to_numpy().ravel())
    assert "DOE^JANE" not in cells and "19700101" not in cells and "MRN" not in cells
    assert manifest.loc[ws.relative(src / "images" / "1.png"), "label"] == "pneumonia"
    [missing] = summary.quarantined
    assert missing.code == "missing_file"
    assert missing.message == "listed in labels.csv but the file does not exist"
    assert missing.sha256 is None and missing.size is None
    assert summary.balanced and summary.ingested == 8


def test_medmnist_npz_is_ingested_per_split_with_copies_in_the_store(make_workspace, tmp_path):
    ws = make_workspace({"data": {"min_side": 16}}, with_data=False)
    rng = np.random.default_rng(0)
    archive = tmp_path / "pneumoniamnist.npz"
    arrays = {}
    for split, n in (("train", 10), ("val", 4), ("test", 4)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1)
    np.savez(archive, **arrays)
    summary = ingest(ws, [archive])
    manifest = load_manifest(ws.manifest_path).set_index("source_ref")
    assert summary.ingested == 18
    row = manifest.loc[f"{ws.relative(archive)}#val/3"]
    assert (row["split"], row["label"], row["format"]) == ("val", "pneumonia", "npz")
    stored = ws.resolve(row["source_path"])
    assert stored.is_relative_to(ws.store_dir)
    np.testing.assert_array_equal(read_image(stored), arrays["val_images"][3])
    assert ingest(ws, [archive]).already_present == 18


def _npz_with_shared_images(path: Path, size: int = 28) -> Path:
    """A MedMNIST-layout archive whose splits share images, some copied twice in one split."""
    rng = np.random.default_rng(7)
    arrays = {}
    for split, n in (("train", 12), ("val", 6), ("test", 6)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1)
    # train/3 is also train/7 and val/1; val/2 is also val/4 and test/0 (same labels)
    arrays["train_images"][7] = arrays["val_images"][1] = arrays["train_images"][3]
    arrays["val_images"][4] = arrays["test_images"][0] = arrays["val_images"][2]
    np.savez(path, **arrays)
    return path


def test_a_dedupe_decision_sticks_when_the_next_ingest_has_no_dedupe(make_workspace, tmp_path):
    ws = make_workspace(with_data=False)
    archive = _npz_with_shared_images(tmp_path / "pneumoniamnist.npz")
    deduped = ingest(ws, [archive], dedupe=True)
    after_dedupe = load_manifest(ws.manifest_path)
    assert len(deduped.removed_by_dedupe) == 2 and deduped.cross_split_duplicates == 0

    for dedupe in (False, None, True):
        again = ingest(ws, [archive], dedupe=dedupe)
        manifest = load_manifest(ws.manifest_path)
        assert again.ingested == 0 and again.cross_split_duplicates == 0 and again.balanced
        pd.testing.assert_frame_equal(
            manifest[["image_id", "split"]], after_dedupe[["image_id", "split"]]
        )
    # the copies dedupe's decision covers are set aside with a reason, never deleted
    logged = {e["path"]: e for e in _log(ws)}
    for copy, kept in (("train/7", "val"), ("val/4", "test")):
        entry = logged[f"{ws.relative(archive)}#{copy}"]
        assert entry["code"] == "duplicate"
        assert f"an earlier dedupe set aside, keeping it in {kept} only" in entry["message"]
    assert archive.exists()
    report = run_validate(ws, ws.config, raise_on_failure=False)
    checks = {c.name: c for c in report.checks}
    assert checks["no_exact_duplicate_across_splits"].success
    assert checks["patient_in_one_split"].success


def _medmnist_archives(root: Path, sizes: tuple[int, ...], per_archive: int = 16) -> list[Path]:
    """One MedMNIST-layout .npz per size, of distinct chest phantoms (one per patient) resized
    as MedMNIST resizes radiographs; 8 train, 4 val and 4 test images each, classes alternating.
    """
    films = root / "films"
    generate_phantoms(films, n_images=per_archive * len(sizes), image_size=256, seed=21,
                      images_per_patient=(1, 1))
    by_class = {c: sorted((films / c).glob("*.png")) for c in ("normal", "pneumonia")}
    archives = []
    for k, size in enumerate(sizes):
        half = per_archive // 2
        paths = [p for pair in zip(by_class["normal"][k * half:(k + 1) * half],
                                   by_class["pneumonia"][k * half:(k + 1) * half], strict=True)
                 for p in pair]
        images = np.stack([
            np.asarray(Image.open(p).convert("L").resize((size, size), Image.Resampling.BOX))
            for p in paths
        ])
        labels = np.arange(per_archive) % 2
        cut = {"train": slice(0, half), "val": slice(half, half + half // 2),
               "test": slice(half + half // 2, per_archive)}
        arrays = {}
        for split, part in cut.items():
            arrays[f"{split}_images"], arrays[f"{split}_labels"] = images[part], labels[part, None]
        archives.append(root / f"chestmnist_{size}.npz")
        np.savez(archives[-1], **arrays)
    return archives


def test_medmnist_sizes_are_ingested_and_pass_the_contract_under_default_params(
    make_workspace, tmp_path
):
    ws = make_workspace(with_data=False)  # data.min_side and validation as params.yaml has them
    archives = _medmnist_archives(tmp_path, (28, 64, 128, 224))
    summary = ingest(ws, archives)
    assert summary.quarantined == [] and summary.ingested == 64
    manifest = load_manifest(ws.manifest_path)
    assert sorted(set(manifest["width"])) == [28, 64, 128, 224]
    report = run_validate(ws, ws.config, raise_on_failure=False)
    assert report.failed_critical == [], [(c.name, c.details) for c in report.failed_critical]
    near = next(c for c in report.checks if c.name == "no_near_duplicate_within_split")
    assert near.success  # distinct films stay distinct at 28 px


def _colour_sources(root: Path) -> dict[str, Path]:
    """Grey, grey stored as RGB (PNG and JPEG), grey with a small red marker, and colour."""
    rng = np.random.default_rng(5)
    grey = rng.integers(0, 255, (64, 64), dtype=np.uint8)
    as_rgb = np.repeat(grey[:, :, None], 3, axis=2)
    marked = as_rgb.copy()
    marked[10:13, 10:13] = (255, 0, 0)  # a side marker: 9 of 4096 pixels
    lesion = np.stack([grey, grey // 2, grey // 4], axis=2)  # brownish: channels differ
    files = {
        "grey": ("normal/grey.png", grey),
        "grey_rgb_png": ("normal/grey_rgb.png", as_rgb),
        "grey_rgb_jpeg": ("pneumonia/grey_rgb.jpg", np.roll(as_rgb, 7, axis=0)),
        "marked": ("pneumonia/marked.png", np.roll(marked, 19, axis=1)),
        "colour": ("pneumonia/lesion.png", lesion),
    }
    paths = {}
    for name, (relative, pixels) in files.items():
        paths[name] = root / relative
        paths[name].parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(paths[name], quality=90)
    return paths


def test_only_real_colour_images_count_against_a_greyscale_run(make_workspace, tmp_path):
    ws = make_workspace(with_data=False)
    paths = _colour_sources(tmp_path / "src")
    ingest(ws, [tmp_path / "src"])
    manifest = load_manifest(ws.manifest_path).set_index("source_ref")
    colour = {name: bool(manifest.loc[ws.relative(path), "colour"]) for name, path in paths.items()}
    assert colour == {
        "grey": False, "grey_rgb_png": False, "grey_rgb_jpeg": False, "marked": False,
        "colour": True,
    }
    lesion_id = manifest.loc[ws.relative(paths["colour"]), "image_id"]

    def colour_check(channels: int) -> Any:
        data = ws.config.data
        report = validate_manifest(
            manifest.reset_index(), list(ws.config.base.class_names), ws.config.validation,
            tmp_path / f"validation_{channels}.json", channels=channels,
            near_duplicate_distance=data.near_duplicate_distance,
            near_duplicate_thumbnail_distance=data.near_duplicate_thumbnail_distance,
        )
        return next(c for c in report.checks if c.name == "colour_matches_channels")

    grey_run = colour_check(1)
    assert not grey_run.success and grey_run.level == "warning"
    assert grey_run.offending_ids == [lesion_id]
    assert "set base.channels: 3 in params.yaml" in grey_run.details
    assert colour_check(3).success


@pytest.mark.parametrize("column", ["patient_name", "Date of Birth", "MRN", "email"])
def test_a_label_list_column_naming_an_identifier_is_refused_even_when_allow_listed(
    make_workspace, tmp_path, column
):
    from medimg.errors import ConfigError

    ws = make_workspace({"data": {"metadata_columns": ["sex", column]}}, with_data=False)
    src = _two_class_source(tmp_path / "src", 2)
    with pytest.raises(ConfigError, match=f"'{column}' names a direct patient identifier") as err:
        ingest(ws, [src])
    assert "\n" not in str(err.value).strip()
    assert not ws.manifest_path.exists() and not ws.store_dir.exists()


def test_rgb_npz_with_flat_labels_and_named_classes(make_workspace, tmp_path):
    ws = make_workspace(
        {"base": {"class_names": ["benign", "malignant", "other"]}, "data": {"min_side": 16}},
        with_data=False,
    )
    archive = tmp_path / "derma.npz"
    rng = np.random.default_rng(1)
    np.savez(
        archive,
        train_images=rng.integers(0, 255, (6, 28, 28, 3), dtype=np.uint8),
        train_labels=np.array([0, 1, 2, 0, 1, 2]),
        test_images=rng.integers(0, 255, (3, 28, 28, 3), dtype=np.uint8),
        test_labels=np.array([2, 1, 0]),
    )
    ingest(ws, [archive], npz_class_names=["benign", "malignant", "other"])
    manifest = load_manifest(ws.manifest_path)
    assert set(manifest["channels"]) == {3}
    assert manifest["label"].value_counts().to_dict() == {"benign": 3, "malignant": 3, "other": 3}


def test_dicom_is_deidentified_before_anything_is_written(make_workspace, tmp_path):
    ws = make_workspace(with_data=False)
    src = tmp_path / "dicoms"
    name_folder = src / "pneumonia" / "DOE_JANE"
    name_folder.mkdir(parents=True)
    write_dicom(name_folder / "chest.dcm")
    (src / "normal").mkdir()
    write_dicom(src / "normal" / "IM0001", phi={"PatientID": "MRN-2", "PatientName": "ROE^RICHARD"})
    summary = ingest(ws, [src])
    assert summary.ingested == 2
    manifest = load_manifest(ws.manifest_path).set_index("label")
    row = manifest.loc["pneumonia"]
    assert row["format"] == "dicom" and row["bit_depth"] == 12
    assert row["patient_id"] == pseudonymise(PHI_VALUES["PatientID"], KEY)
    assert "DOE" not in row["source_ref"].upper()  # the patient's name in the path is scrubbed
    stored = ws.resolve(row["source_path"])
    assert stored.is_relative_to(ws.store_dir) and stored.suffix == ".dcm"
    assert row["meta_modality"] == "DX"
    # the de-identified copy decodes to the same pixels as the original
    np.testing.assert_array_equal(read_image(stored), read_image(name_folder / "chest.dcm"))
    written = b"".join(
        p.read_bytes()
        for p in ws.root.joinpath("data").rglob("*")
        if p.is_file() and "raw" not in p.parts
    )
    for value in [*PHI_VALUES.values(), "MRN-2", "ROE^RICHARD"]:
        assert value.encode() not in written, value


def test_dicom_labels_can_come_from_a_list_keyed_by_sop_instance_uid(make_workspace, tmp_path):
    ws = make_workspace(with_data=False)
    tree = tmp_path / "tree" / "study1"
    tree.mkdir(parents=True)
    uids = {}
    for i in range(4):
        uid = f"1.2.826.0.1.3680043.8.498.1.{i + 1}"
        write_dicom(
            tree / f"{i}.dcm",
            sop_instance_uid=uid,
            phi={"PatientID": f"MRN-{i}"},
            bits_stored=8 + i * 2,
        )
        uids[uid] = ["normal", "pneumonia"][i % 2]
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"sop_instance_uid": list(uids), "label": list(uids.values())}).to_csv(
        labels, index=False
    )
    summary = ingest(ws, [tmp_path / "tree"], labels=labels)
    manifest = load_manifest(ws.manifest_path)
    assert summary.ingested == 4
    assert sorted(manifest["label"]) == ["normal", "normal", "pneumonia", "pneumonia"]
    assert not set(uids) & set(" ".join(manifest.astype(str).to_numpy().ravel()).split())


def test_burned_in_annotation_is_quarantined_by_reference_only(make_workspace, tmp_path):
    ws = make_workspace(with_data=False)
    src = _two_class_source(tmp_path / "src", 3)
    write_dicom(src / "pneumonia" / "burned.dcm", burned_in="DOE JANE")
    summary = ingest(ws, [src])
    [entry] = summary.quarantined
    assert entry.code == "burned_in"
    assert entry.message.startswith("DICOM BurnedInAnnotation is YES")
    assert [p.name for p in ws.quarantine_dir.iterdir()] == ["quarantine.jsonl"]


def test_dicom_without_a_key_fails_before_writing(make_workspace, tmp_path):
    ws = make_workspace(with_data=False)
    src = _two_class_source(tmp_path / "src", 2)
    write_dicom(src / "normal" / "scan.dcm")
    with pytest.raises(PseudonymKeyMissing, match="MEDIMG_PSEUDONYM_KEY"):
        ingest(ws, [src], key=None)
    assert not ws.manifest_path.exists() and not ws.store_dir.exists()


def test_patient_ids_without_a_key_fail_with_the_fix(make_workspace):
    ws = make_workspace()
    with pytest.raises(PseudonymKeyMissing, match="MEDIMG_PSEUDONYM_KEY"):
        ingest(ws, [ws.raw_dir], key=None)


@pytest.mark.parametrize(
    "layout,message",
    [
        ({}, "no class folders"),
        ({"normal": 1, "cats": 1}, "not classes"),
    ],
)
def test_bad_sources_fail_with_a_reason(make_workspace, tmp_path, layout, message):
    ws = make_workspace(with_data=False)
    src = tmp_path / "src"
    src.mkdir()
    for folder, count in layout.items():
        for i in range(count):
            _png(src / folder / f"{i}.png", i)
    with pytest.raises(DataError, match=message):
        ingest(ws, [src])


def test_label_list_without_a_label_column_names_what_it_needs(make_workspace, tmp_path):
    ws = make_workspace(with_data=False)
    table = tmp_path / "list.csv"
    table.write_text("path,score\na.png,1\n")
    with pytest.raises(DataError, match=r"needs a path column .* and a label column"):
        ingest(ws, [table])


def test_image_rewritten_in_place_keeps_its_split(make_workspace, tmp_path):
    ws = make_workspace(with_data=False)
    src = _two_class_source(tmp_path / "src", 4)
    ingest(ws, [src])
    before = load_manifest(ws.manifest_path).set_index("source_ref")
    _png(src / "normal" / "n0.png", 500)  # new bytes, same file
    summary = ingest(ws, [src])
    after = load_manifest(ws.manifest_path).set_index("source_ref")
    assert summary.ingested == 1 and len(after) == len(before)
    key = ws.relative(src / "normal" / "n0.png")
    assert after.loc[key, "image_id"] != before.loc[key, "image_id"]
    assert after.loc[key, "split"] == before.loc[key, "split"]
    assert after.loc[key, "patient_id"] == before.loc[key, "patient_id"]


def test_dicom_labels_can_come_from_a_list_keyed_by_path(make_workspace, tmp_path):
    ws = make_workspace(with_data=False)
    tree = tmp_path / "tree"
    (tree / "series1").mkdir(parents=True)
    for i in range(2):
        write_dicom(
            tree / "series1" / f"IM{i}", phi={"PatientID": f"MRN-{i}"}, bits_stored=10 + i * 4
        )
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\nseries1/IM0,normal\nseries1/IM1,pneumonia\n")
    summary = ingest(ws, [tree], labels=labels)
    manifest = load_manifest(ws.manifest_path).sort_values("bit_depth")
    assert summary.ingested == 2
    assert list(manifest["label"]) == ["normal", "pneumonia"]
    assert list(manifest["label_source"]) == ["csv:labels.csv"] * 2
