"""Perceptual hashes of decoded images and a search for near-duplicate pairs.

The hash is a 64-bit DCT hash in the manner of pHash: the image is reduced to 32 x 32 greyscale
by area averaging, transformed with a 2-D DCT, and each of 64 coefficients becomes one bit, set
when the coefficient is above the median of the 64.

Classic pHash takes the 8 x 8 lowest frequencies. Chest radiographs share their low-frequency
layout (body, lung fields, heart), so for them those bits mostly say "a chest": among 600
synthetic phantoms (128 px), 135 pairs of films of *different* patients came within 4 bits of
each other. The default here hashes the 8 x 8 block starting at frequency 5 in both directions
(2.5-6.5 cycles per image: lung texture, ribs, opacities), which left 2 such pairs, while copies
resized to 3/4 or 1/2 and re-encoded as JPEG quality 75 stayed within 2 bits for 512 px sources
and within 6 (99% within 4) for 128 px ones. Like every global DCT hash it does not survive
crops or shifts of more than a pixel or two.

A 64-bit hash cannot tell every pair of similar films apart, so a match within the bound is best
treated as a candidate and confirmed with :func:`thumbnail_distance`, which separates near
copies (below 0.07) from distinct films (0.086 and up) with a wide margin.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence

import cv2
import numpy as np

from medimg.channels import to_channels

logger = logging.getLogger(__name__)

HASH_SIZE = 32  # side of the thumbnail the DCT is taken of
HASH_BLOCK = 8  # 8 x 8 coefficients = 64 bits
PHASH_BITS = HASH_BLOCK * HASH_BLOCK
"""Bits in a hash, so the Hamming distance of two hashes is 0..64."""
# First DCT frequency (in both directions) of the hashed block. 0 gives classic pHash, whose
# median then leaves out the DC term as imagehash does. Hashes are comparable only when made with
# the same offset, so changing it means rehashing every stored image.
PHASH_OFFSET = 5
THUMBNAIL_SIZE = 16
# Distances computed at once by near_duplicate_pairs: 9 bytes each (XOR and count), so about
# 38 MB however many hashes there are.
_CHUNK_ELEMENTS = 1 << 22


def phash(pixels: np.ndarray, *, offset: int = PHASH_OFFSET) -> int:
    """64-bit perceptual hash of a uint8 image, greyscale (H, W) / (H, W, 1) or colour (H, W, 3).

    Args:
        pixels: Decoded pixels; colour is reduced to ITU-R 601 luma first.
        offset: First DCT frequency of the 8 x 8 block; keep the default so hashes compare.

    Returns:
        An int in ``[0, 2**64)``; bit 63 is the block's first coefficient, in row-major order.
    """
    if not 0 <= offset <= HASH_SIZE - HASH_BLOCK:
        raise ValueError(f"offset {offset} must be in 0..{HASH_SIZE - HASH_BLOCK}")
    grey = _grey(pixels)
    small = cv2.resize(grey, (HASH_SIZE, HASH_SIZE), interpolation=cv2.INTER_AREA)
    block = cv2.dct(small)[offset : offset + HASH_BLOCK, offset : offset + HASH_BLOCK].ravel()
    # The DC term measures brightness, not structure, and would bias the median.
    median = np.median(block[1:] if offset == 0 else block)
    bits = np.packbits(block > median)
    return int.from_bytes(bits.tobytes(), "big")


def thumbnail(pixels: np.ndarray) -> np.ndarray:
    """A 16 x 16 luma thumbnail with zero mean and unit variance, for :func:`thumbnail_distance`.

    Returns:
        float32 array of shape (256,); all zeros for a constant image.
    """
    return _normalised(_thumbnail_pixels(pixels))


def _thumbnail_pixels(pixels: np.ndarray) -> np.ndarray:
    small = cv2.resize(
        _grey(pixels), (THUMBNAIL_SIZE, THUMBNAIL_SIZE), interpolation=cv2.INTER_AREA
    )
    # Rounded to bytes, so the thumbnail stored in the manifest is exactly the one compared.
    return np.clip(np.round(small), 0, 255).astype(np.uint8).ravel()


def _normalised(small: np.ndarray) -> np.ndarray:
    values = small.astype(np.float64)
    values -= values.mean()
    std = values.std()
    # Brightness and contrast are normalised away: a re-windowed copy is still a copy.
    return (values / std if std > 1e-6 else values).astype(np.float32)


def thumbnail_code(pixels: np.ndarray) -> str:
    """The 16 x 16 thumbnail as text for the manifest: 256 bytes, base64 (344 characters)."""
    return base64.b64encode(_thumbnail_pixels(pixels).tobytes()).decode("ascii")


def parse_thumbnail(code: str) -> np.ndarray:
    """A stored :func:`thumbnail_code` as the array :func:`thumbnail` returns."""
    raw = np.frombuffer(base64.b64decode(code, validate=True), dtype=np.uint8)
    if raw.size != THUMBNAIL_SIZE * THUMBNAIL_SIZE:
        raise ValueError(f"thumbnail of {raw.size} bytes; expected {THUMBNAIL_SIZE ** 2}")
    return _normalised(raw)


def near_duplicates(
    phashes: Sequence[str],
    thumbnails: Sequence[str | None] | None,
    max_distance: int,
    max_thumbnail_distance: float,
) -> list[tuple[int, int, int]]:
    """Near-duplicate pairs: hashes within ``max_distance`` bits, confirmed by thumbnails.

    The hash finds candidates fast; the thumbnail check drops the distinct films that a 64-bit
    hash cannot tell apart. Without thumbnails (all, or one of a pair), the hash alone decides.
    Both bounds are settings: ``data.near_duplicate_distance`` and
    ``data.near_duplicate_thumbnail_distance``.

    Returns:
        ``(i, j, hash distance)`` with ``i < j``, as :func:`near_duplicate_pairs`.
    """
    pairs = near_duplicate_pairs([parse_phash(h) for h in phashes], max_distance)
    if thumbnails is None or not pairs:
        return pairs
    cache: dict[int, np.ndarray | None] = {}

    def thumb(k: int) -> np.ndarray | None:
        if k not in cache:
            code = thumbnails[k]
            cache[k] = parse_thumbnail(code) if isinstance(code, str) else None
        return cache[k]

    kept = []
    for i, j, d in pairs:
        a, b = thumb(i), thumb(j)
        if a is None or b is None or thumbnail_distance(a, b) <= max_thumbnail_distance:
            kept.append((i, j, d))
    return kept


def thumbnail_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Root-mean-square difference of two :func:`thumbnail` arrays (0 same, about 1.4 unrelated).

    Measured near copies (resized, JPEG 50-75, blurred, gamma 0.8) reached 0.068; different
    films of one patient started at 0.086, of different patients at 0.155.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"thumbnails of shapes {a.shape} and {b.shape} do not compare")
    return float(np.sqrt(np.mean((a - b) ** 2)))


def phash_hex(value: int) -> str:
    """A hash as 16 lowercase hex digits."""
    if not 0 <= value < 2**PHASH_BITS:
        raise ValueError(f"hash {value!r} is not a 64-bit unsigned integer")
    return f"{value:016x}"


def parse_phash(text: str) -> int:
    """Read a hash written by :func:`phash_hex`."""
    cleaned = text.strip().lower()
    if len(cleaned) != 16 or any(c not in "0123456789abcdef" for c in cleaned):
        raise ValueError(f"perceptual hash {text!r} must be 16 hex digits, e.g. 'c3a1009f5e2b7d44'")
    return int(cleaned, 16)


def hamming(a: int, b: int) -> int:
    """Number of bits in which two hashes differ."""
    return (int(a) ^ int(b)).bit_count()


def near_duplicate_pairs(
    hashes: Sequence[int] | np.ndarray, max_distance: int, *, chunk_rows: int | None = None
) -> list[tuple[int, int, int]]:
    """All pairs of hashes within ``max_distance`` bits of each other.

    Args:
        hashes: 64-bit hashes, e.g. from :func:`phash`.
        max_distance: Largest Hamming distance that counts as a near duplicate (0..64;
            ``data.near_duplicate_distance``).
        chunk_rows: Rows of the distance matrix computed at once; ``None`` sizes chunks to about
            four million distances. Bounds memory, never changes the result.

    Returns:
        ``(i, j, distance)`` with ``i < j`` indexing ``hashes``, sorted by ``i`` then ``j``.
    """
    if not 0 <= max_distance <= PHASH_BITS:
        raise ValueError(f"max_distance {max_distance} must be in 0..{PHASH_BITS}")
    if chunk_rows is not None and chunk_rows < 1:
        raise ValueError(f"chunk_rows {chunk_rows} must be at least 1")
    values = _as_uint64(hashes)
    n = len(values)
    rows_per_chunk = chunk_rows or max(1, _CHUNK_ELEMENTS // max(n, 1))
    size = min(rows_per_chunk, n) * n
    # Flat buffers reused by every chunk, viewed at each chunk's shape so they stay contiguous.
    xor_buffer = np.empty(size, dtype=np.uint64)
    count_buffer = np.empty(size, dtype=np.uint8)
    mask_buffer = np.empty(size + 8, dtype=np.bool_)
    pairs: list[tuple[int, int, int]] = []
    for start in range(0, n - 1, rows_per_chunk):
        stop = min(start + rows_per_chunk, n)
        shape = (stop - start, n - start)  # pairs (i, j) with i < j need only columns >= start
        k = shape[0] * shape[1]
        xor = xor_buffer[:k].reshape(shape)
        counts = count_buffer[:k].reshape(shape)
        np.bitwise_xor(values[start:stop, None], values[None, start:], out=xor)
        np.bitwise_count(xor, out=counts)
        flat = _close_positions(counts.reshape(-1), max_distance, mask_buffer)
        i_local, j_local = np.divmod(flat, shape[1])
        keep = j_local > i_local
        i_local, j_local = i_local[keep], j_local[keep]
        pairs.extend(
            zip(
                (i_local + start).tolist(),
                (j_local + start).tolist(),
                counts[i_local, j_local].tolist(),
                strict=True,
            )
        )
    logger.debug("%d pairs within %d bits among %d hashes", len(pairs), max_distance, n)
    return pairs


def _close_positions(counts: np.ndarray, max_distance: int, mask_buffer: np.ndarray) -> np.ndarray:
    """Flat indices where ``counts <= max_distance``, scanning 8 mask bytes at a time."""
    k = len(counts)
    padded = (k + 7) // 8 * 8
    mask = mask_buffer[:padded]
    np.less_equal(counts, max_distance, out=mask[:k])
    mask[k:] = False
    # Near duplicates are rare, so finding the few non-zero 8-byte words is much cheaper than
    # np.nonzero over every byte.
    words = np.flatnonzero(mask.view(np.uint64))
    if len(words) == 0:
        return words
    candidates = (words[:, None] * 8 + np.arange(8)).ravel()
    return candidates[mask[candidates]]


def _as_uint64(hashes: Sequence[int] | np.ndarray) -> np.ndarray:
    array = np.asarray(hashes)
    if array.ndim != 1:
        raise ValueError(f"hashes must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        return np.zeros(0, dtype=np.uint64)
    if array.dtype == np.uint64:
        return array
    if array.dtype.kind in "iu" and array.min() >= 0:
        return array.astype(np.uint64)
    # Python ints at or above 2**63 arrive as an object array; convert one by one.
    try:
        return np.array([int(h) for h in hashes], dtype=np.uint64)
    except (OverflowError, ValueError, TypeError) as exc:
        raise ValueError(f"hashes must be integers in [0, 2**64): {exc}") from None


def _grey(pixels: np.ndarray) -> np.ndarray:
    pixels = np.asarray(pixels)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 3 and pixels.shape[2] in (3, 4):
        # The same rounded luma as everywhere else, so an RGB copy of a grey image hashes alike.
        pixels = to_channels(pixels[:, :, :3], 1)[:, :, 0]
    if pixels.ndim != 2 or pixels.size == 0:
        raise ValueError(f"pixels of shape {pixels.shape} are not an image; decode first")
    return pixels.astype(np.float32)
