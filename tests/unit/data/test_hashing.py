from __future__ import annotations

import csv
import io
import itertools

import cv2
import numpy as np
import pytest
from PIL import Image

from medimg.config import DataConfig
from medimg.data.hashing import (
    PHASH_BITS,
    hamming,
    near_duplicate_pairs,
    near_duplicates,
    parse_phash,
    parse_thumbnail,
    phash,
    phash_hex,
    thumbnail,
    thumbnail_code,
    thumbnail_distance,
)
from medimg.data.images import decode_image, read_image
from medimg.data.phantoms import generate_phantoms

# The bounds ingest and the contract use unless params.yaml says otherwise: the measurements
# below are what they were chosen by.
DEFAULTS = DataConfig()
NEAR_DUPLICATE_DISTANCE = DEFAULTS.near_duplicate_distance
NEAR_COPY_THUMBNAIL_DISTANCE = DEFAULTS.near_duplicate_thumbnail_distance


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[np.ndarray], list[str]]:
    """60 phantoms of 256 px from about 15 pseudo-patients, with their patient ids."""
    out = tmp_path_factory.mktemp("hash") / "raw"
    generate_phantoms(out, n_images=60, image_size=256, seed=5)
    with (out / "patients.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [read_image(out / row["path"]) for row in rows], [row["patient_id"] for row in rows]


def _near_copy(pixels: np.ndarray, side: int, quality: int = 75) -> np.ndarray:
    """Resized with area averaging and re-encoded as JPEG, as a copy passed around would be."""
    small = cv2.resize(pixels, (side, side), interpolation=cv2.INTER_AREA)
    buffer = io.BytesIO()
    Image.fromarray(small).save(buffer, format="JPEG", quality=quality)
    return decode_image(buffer.getvalue())


def _brute_force(hashes: list[int], max_distance: int) -> list[tuple[int, int, int]]:
    return [
        (i, j, bin(hashes[i] ^ hashes[j]).count("1"))
        for i, j in itertools.combinations(range(len(hashes)), 2)
        if bin(hashes[i] ^ hashes[j]).count("1") <= max_distance
    ]


def _random_hashes(n: int, seed: int = 0) -> list[int]:
    """Random 64-bit hashes with planted near duplicates, including values of 2**63 and above."""
    rng = np.random.default_rng(seed)
    hashes = [int(h) for h in rng.integers(0, 2**64, size=n, dtype=np.uint64)]
    for k in range(0, n - 1, 9):
        flips = rng.choice(64, size=int(rng.integers(0, 7)), replace=False)
        hashes[k + 1] = hashes[k] ^ sum(1 << int(b) for b in flips)
    hashes[-1] = 2**64 - 1
    return hashes


# --- the hash ----------------------------------------------------------------------------------


def test_identical_pixels_hash_identically(phantoms):
    image = phantoms[0][0]
    assert phash(image) == phash(image.copy())
    assert phash(image) == phash(image[:, :, None])  # (H, W, 1) is the same image
    assert phash(image) == phash(np.repeat(image[:, :, None], 3, axis=2))  # grey stored as RGB
    assert 0 <= phash(image) < 2**64


def test_hex_round_trip():
    for value in (0, 1, 2**63, 2**64 - 1, 0x0123456789ABCDEF):
        text = phash_hex(value)
        assert len(text) == 16 and text == text.lower()
        assert parse_phash(text) == value
    assert parse_phash(" 0123456789ABCDEF\n") == 0x0123456789ABCDEF


@pytest.mark.parametrize("text", ["", "abc", "0123456789abcdeg", "0x23456789abcdef", "1" * 17])
def test_parse_refuses_what_is_not_a_hash(text):
    with pytest.raises(ValueError, match="16 hex digits"):
        parse_phash(text)


def test_hamming_counts_differing_bits():
    assert hamming(0, 0) == 0
    assert hamming(0b1011, 0b0001) == 2
    assert hamming(0, 2**64 - 1) == 64


def test_near_copies_are_within_the_default_bound(phantoms):
    images, _ = phantoms
    for image in images:
        for side in (192, 128):  # 3/4 and 1/2 of 256 px
            distance = hamming(phash(image), phash(_near_copy(image, side)))
            assert distance <= NEAR_DUPLICATE_DISTANCE, (side, distance)


def test_films_of_different_patients_are_beyond_the_default_bound(phantoms):
    images, patients = phantoms
    hashes = [phash(image) for image in images]
    different = [
        hamming(hashes[i], hashes[j])
        for i, j in itertools.combinations(range(len(images)), 2)
        if patients[i] != patients[j]
    ]
    assert min(different) > NEAR_DUPLICATE_DISTANCE
    assert np.median(different) >= 24  # most pairs are far apart, not just past the bound


def test_the_default_hash_separates_phantoms_better_than_classic_phash(phantoms):
    # Classic pHash (the lowest frequencies) sees mostly the shared chest layout.
    images, patients = phantoms
    pairs = [
        (i, j)
        for i, j in itertools.combinations(range(len(images)), 2)
        if patients[i] != patients[j]
    ]

    def median_distance(offset: int) -> float:
        hashes = [phash(image, offset=offset) for image in images]
        return float(np.median([hamming(hashes[i], hashes[j]) for i, j in pairs]))

    assert median_distance(5) > median_distance(0) + 5


def test_different_images_of_any_kind_are_far_apart():
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (64, 64), dtype=np.uint8) for _ in range(20)]
    hashes = [phash(image) for image in images]
    assert min(hamming(a, b) for a, b in itertools.combinations(hashes, 2)) > 12


def test_thumbnail_distance_confirms_copies_and_rejects_other_films(phantoms):
    images, _ = phantoms
    thumbs = [thumbnail(image) for image in images]
    copies = [thumbnail_distance(thumbnail(_near_copy(image, 128)), t)
              for image, t in zip(images, thumbs, strict=True)]  # fmt: skip
    others = [
        thumbnail_distance(thumbs[i], thumbs[j])
        for i, j in itertools.combinations(range(len(images)), 2)
    ]
    assert max(copies) < NEAR_COPY_THUMBNAIL_DISTANCE < min(others)
    assert thumbnail(np.full((8, 8), 90, np.uint8)).tolist() == [0.0] * 256  # blank, no NaN


def test_phash_refuses_what_is_not_an_image():
    with pytest.raises(ValueError, match="not an image"):
        phash(np.zeros((0, 5), np.uint8))
    with pytest.raises(ValueError, match="not an image"):
        phash(np.zeros((4, 4, 2), np.uint8))


# --- the pair search ---------------------------------------------------------------------------


@pytest.mark.parametrize("max_distance", [0, 3, 6, 20])
def test_pairs_match_a_brute_force_search(max_distance):
    hashes = _random_hashes(300)
    expected = _brute_force(hashes, max_distance)
    found = near_duplicate_pairs(hashes, max_distance)
    assert found == expected
    if max_distance >= 6:
        assert len(found) >= 300 // 9  # every planted pair is there


@pytest.mark.parametrize("chunk_rows", [1, 7, 64, 299, 300, 10_000])
def test_chunking_never_changes_the_answer(chunk_rows):
    hashes = _random_hashes(300, seed=1)
    assert near_duplicate_pairs(hashes, 5, chunk_rows=chunk_rows) == near_duplicate_pairs(hashes, 5)


def test_numpy_and_python_inputs_agree():
    hashes = _random_hashes(100, seed=2)
    as_array = np.array(hashes, dtype=np.uint64)
    assert near_duplicate_pairs(as_array, 6) == near_duplicate_pairs(hashes, 6)
    small = [h >> 1 for h in hashes]  # below 2**63, so numpy makes int64 of them
    assert near_duplicate_pairs(small, 6) == _brute_force(small, 6)


def test_exact_duplicates_are_distance_zero():
    assert near_duplicate_pairs([5, 5, 5], 0) == [(0, 1, 0), (0, 2, 0), (1, 2, 0)]


@pytest.mark.parametrize("hashes", [[], [123], np.zeros(0, dtype=np.uint64)])
def test_empty_and_single_inputs_have_no_pairs(hashes):
    assert near_duplicate_pairs(hashes, 64) == []


def test_bad_arguments_are_refused():
    assert PHASH_BITS == 64
    assert near_duplicate_pairs([1, 2], PHASH_BITS) == [(0, 1, 2)]
    with pytest.raises(ValueError, match="max_distance"):
        near_duplicate_pairs([1, 2], PHASH_BITS + 1)
    with pytest.raises(ValueError, match="chunk_rows"):
        near_duplicate_pairs([1, 2], 4, chunk_rows=0)
    with pytest.raises(ValueError, match=r"\[0, 2\*\*64\)"):
        near_duplicate_pairs([1, -2], 4)
    with pytest.raises(ValueError, match=r"\[0, 2\*\*64\)"):
        near_duplicate_pairs([1, 2**64], 4)


def test_ten_thousand_hashes_are_searched_in_bounded_chunks():
    hashes = np.array(_random_hashes(10_000, seed=4), dtype=np.uint64)
    pairs = near_duplicate_pairs(hashes, 4, chunk_rows=500)
    assert pairs == sorted(pairs)
    assert all(i < j and d <= 4 for i, j, d in pairs)
    assert all(hamming(int(hashes[i]), int(hashes[j])) == d for i, j, d in pairs)
    planted = sum(1 for k in range(0, 9_999, 9) if hamming(int(hashes[k]), int(hashes[k + 1])) <= 4)
    assert sum(1 for i, j, _ in pairs if j == i + 1 and i % 9 == 0) == planted


def test_stored_thumbnails_confirm_copies_and_drop_hash_collisions(phantoms):
    images, patients = phantoms
    copies = [_near_copy(images[k], 192) for k in range(4)]
    pixels = [*images, *copies]
    hashes = [phash_hex(phash(p)) for p in pixels]
    codes = [thumbnail_code(p) for p in pixels]
    np.testing.assert_allclose(parse_thumbnail(codes[0]), thumbnail(images[0]), atol=1e-6)
    # a loose hash bound lets distinct films through; the thumbnails keep only the copies
    loose = near_duplicate_pairs([parse_phash(h) for h in hashes], 16)
    confirmed = near_duplicates(hashes, codes, 16, NEAR_COPY_THUMBNAIL_DISTANCE)
    n = len(images)
    assert {(k, n + k) for k in range(4)} <= {(i, j) for i, j, _ in confirmed}
    assert len(loose) > len(confirmed)
    # whatever else is confirmed is a pair of films of one patient, never of two patients
    patient_of = [*patients, *patients[:4]]
    assert all(patient_of[i] == patient_of[j] for i, j, _ in confirmed)
    assert near_duplicates(hashes, None, 16, NEAR_COPY_THUMBNAIL_DISTANCE) == loose
