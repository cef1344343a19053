"""Preprocessing is content-addressed: an image whose id and pixel params are unchanged is never
decoded again, and a label change or new images decode only what is new."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_params

from medimg.config import load_config
from medimg.data.manifest import load_manifest, write_manifest
from medimg.data.packed import load_split
from medimg.errors import WorkspaceError
from medimg.preprocessing.cache import KEEP_KEYS, PreprocessCache, cache_root
from medimg.preprocessing.stage import run_preprocess
from medimg.workspace import SPLITS, Workspace


def _preprocess(ws: Workspace) -> list[str]:
    """Run the stage with params.yaml as it is now; the ids it decoded, sorted."""
    decoded: list[str] = []
    run_preprocess(ws, load_config(ws.params_path), decoded=decoded.append)
    return sorted(decoded)


def _packed(ws: Workspace) -> dict[str, bytes]:
    names = [f"{split}_{kind}.npy" for split in SPLITS for kind in ("images", "labels")]
    return {name: (ws.processed_dir / name).read_bytes() for name in [*names, "index.json"]}


def _all_ids(ws: Workspace) -> list[str]:
    manifest = load_manifest(ws.manifest_path)
    return sorted(manifest[manifest["split"].isin(SPLITS)]["image_id"])


@pytest.fixture
def ws(prepared_workspace) -> Workspace:
    return prepared_workspace(through="validate")


def test_a_second_run_decodes_nothing_and_packs_the_same_bytes(ws):
    assert _preprocess(ws) == _all_ids(ws)
    first = _packed(ws)

    assert _preprocess(ws) == []
    assert _packed(ws) == first
    assert (cache_root(ws) / ".gitignore").read_text().splitlines()[-1] == "*"


def test_new_images_are_the_only_ones_decoded(ws):
    full = load_manifest(ws.manifest_path)
    new = set(full[full["split"] == "train"]["image_id"][:5])
    write_manifest(full[~full["image_id"].isin(new)].reset_index(drop=True), ws.manifest_path)
    assert len(_preprocess(ws)) == len(_all_ids(ws))

    write_manifest(full, ws.manifest_path)
    assert _preprocess(ws) == sorted(new)
    train = load_split(ws, "train", mmap=False)
    assert train.image_ids == list(full[full["split"] == "train"]["image_id"])


def test_a_label_only_correction_decodes_nothing_and_changes_the_labels(ws):
    _preprocess(ws)
    before = load_split(ws, "train", mmap=False)
    manifest = load_manifest(ws.manifest_path)
    classes = ws.config.base.class_names
    corrected = manifest.index[manifest["split"] == "train"][:3]
    manifest.loc[corrected, "label"] = [
        classes[1 - classes.index(x)] for x in manifest.loc[corrected, "label"]
    ]
    write_manifest(manifest, ws.manifest_path)

    assert _preprocess(ws) == []
    after = load_split(ws, "train", mmap=False)
    np.testing.assert_array_equal(after.images, before.images)
    assert (after.labels != before.labels).sum() == 3


def test_changed_pixel_params_decode_everything_and_switching_back_is_free(ws):
    _preprocess(ws)
    contrast = ws.config.preprocess.contrast
    write_params(ws.root, {"preprocess": {"contrast": "none" if contrast != "none" else "clahe"}})
    assert _preprocess(ws) == _all_ids(ws)

    write_params(ws.root, {"preprocess": {"contrast": contrast}})
    assert _preprocess(ws) == []


def test_only_the_most_recently_used_keys_are_kept(ws):
    _preprocess(ws)
    for kernel in (5, 7, 9):
        write_params(ws.root, {"preprocess": {"denoise_kernel": kernel}})
        _preprocess(ws)
    keys = [p for p in cache_root(ws).iterdir() if p.is_dir()]
    assert len(keys) == KEEP_KEYS
    assert PreprocessCache.for_config(ws, load_config(ws.params_path)).folder in keys


def test_a_damaged_or_torn_entry_is_decoded_again_never_trusted(ws):
    _preprocess(ws)
    first = _packed(ws)
    cache = PreprocessCache.for_config(ws, ws.config)
    ids = _all_ids(ws)
    flipped = ids[0]
    (row,) = cache.rows([flipped])
    data = bytearray(cache.pack.read_bytes())
    # one pixel of its record changed: still the right length, so only the checksum tells
    data[row * cache.record.itemsize + cache.record.fields["px"][1] + 10] ^= 0xFF
    cache.pack.write_bytes(bytes(data))

    assert _preprocess(ws) == [flipped]
    assert _packed(ws) == first
    assert PreprocessCache.for_config(ws, ws.config).get(flipped) is not None

    # a crash while appending leaves half a record: it is cut off, and its image decoded again
    fresh = PreprocessCache.for_config(ws, ws.config)
    last = max(ids, key=lambda i: fresh.rows([i])[0])
    torn = fresh.pack.stat().st_size - fresh.record.itemsize // 2
    with fresh.pack.open("r+b") as handle:
        handle.truncate(torn)
    assert _preprocess(ws) == [last]
    assert _packed(ws) == first
    assert fresh.pack.stat().st_size % fresh.record.itemsize == 0

    fresh.pack.unlink()  # the cache is only a shortcut: without it, everything is decoded
    assert _preprocess(ws) == ids
    assert _packed(ws) == first


def test_dead_records_are_dropped_when_they_outnumber_the_live_ones(ws):
    _preprocess(ws)
    full = load_manifest(ws.manifest_path)
    cache = PreprocessCache.for_config(ws, ws.config)
    records = cache.pack.stat().st_size // cache.record.itemsize
    assert records == len(set(full["image_id"]))
    kept = full[full["split"] == "test"].reset_index(drop=True)  # most images leave
    write_manifest(kept, ws.manifest_path)
    assert _preprocess(ws) == []
    assert cache.pack.stat().st_size // cache.record.itemsize == len(set(kept["image_id"]))


def test_images_to_decode_that_are_gone_fail_in_one_line_before_any_decoding(ws):
    manifest = load_manifest(ws.manifest_path)
    gone = ws.resolve(manifest["source_path"].iloc[0])
    gone.unlink()
    with pytest.raises(WorkspaceError) as failed:
        _preprocess(ws)
    assert str(failed.value).startswith("1 image(s) in the manifest no longer exist (e.g. ")
    assert "`dvc checkout`" in str(failed.value)
    assert not ws.processed_dir.exists()


def test_dropped_entries_are_decoded_again_and_only_they(ws):
    _preprocess(ws)
    cache = PreprocessCache.for_config(ws, ws.config)
    dropped = set(_all_ids(ws)[:2])
    cache.drop(dropped)
    assert dropped.isdisjoint(cache.record_ids())
    assert _preprocess(ws) == sorted(dropped)
    assert set(cache.record_ids()[-2:]) == dropped  # decodes are appended
