"""The stat cache: a file's hash and kind, read again only when its size or mtime changed."""

from __future__ import annotations

import hashlib
import os

import numpy as np
from PIL import Image
from support.dicoms import write_dicom

from medimg.data.statcache import (
    hash_file,
    load_stat_cache,
    save_stat_cache,
    stat_cache_path,
)
from medimg.workspace import Workspace


def _png(path, seed: int):
    pixels = np.random.default_rng(seed).integers(0, 255, (32, 32), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_a_file_is_hashed_once_until_its_size_or_mtime_changes(tmp_path):
    path = _png(tmp_path / "PT-0001_chest.png", 1)
    cache: dict = {}
    digest, kind, size = hash_file(path, cache)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (kind, size) == ("image", path.stat().st_size)
    # an unchanged stat is answered from the cache, without reading the file
    [entry] = cache.values()
    entry[2] = "f" * 64
    assert hash_file(path, cache) == ("f" * 64, "image", size)
    # a new mtime is read again
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert hash_file(path, cache)[0] == digest
    # keyed by a hash of the path: the cache names no file (nor the patient in its name)
    assert "PT-0001" not in str(cache)


def test_the_kind_is_told_by_content(tmp_path):
    dicom = write_dicom(tmp_path / "IM0001")  # no suffix
    text = tmp_path / "report.txt"
    text.write_text("not an image")
    cache: dict = {}
    assert hash_file(dicom, cache)[1] == "dicom"
    assert hash_file(text, cache)[1] == "other"


def test_the_cache_survives_between_ingests_and_a_broken_one_is_empty(tmp_path):
    ws = Workspace(tmp_path)
    assert load_stat_cache(ws) == {}
    cache: dict = {}
    hash_file(_png(tmp_path / "a.png", 2), cache)
    save_stat_cache(ws, cache)
    assert stat_cache_path(ws) == tmp_path / "data" / ".ingest_cache.json"
    assert load_stat_cache(ws) == cache
    stat_cache_path(ws).write_text("{not json")
    assert load_stat_cache(ws) == {}
