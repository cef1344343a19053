"""The preprocess cache: one preprocessed image per (image id, pixel params).

An image id is ingest's content hash of the image, so an entry stays valid for as long as the
image's bytes, the params that change pixels (:data:`PIXEL_PARAMS`) and the code that makes
pixels (:data:`PIXEL_CODE`) stay the same; a change to any of them is a new key, and a new
folder. The cache lives in ``data/.preprocess_cache/<key>/``, outside DVC's outs (DVC deletes a
stage's outs before it runs it) and ignored by git through its own ``.gitignore``.

Each key's entries are fixed-size records in one append-only file, ``pack.bin``: the image id,
a checksum and the pixels. A run reads the records it needs in blocks, as arrays (no file per
image to open), and appends what it decoded. It is only ever a shortcut: a record whose checksum
fails is decoded again, never trusted, and a half-written last record (a crash) is cut off.

Bounds: the folders of the :data:`KEEP_KEYS` most recently used keys are kept, so switching
params back is free, and older ones are deleted; within the key in use, the pack is rewritten
without dead records (images no longer in the manifest, replaced entries) when they outnumber
the live ones.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np

from medimg import channels
from medimg.config import Config, digest_of
from medimg.data import images
from medimg.preprocessing import transforms
from medimg.workspace import Workspace

logger = logging.getLogger(__name__)

PIXEL_PARAMS = ("base.image_size", "base.channels", "data.dicom_frame", "data.max_pixels",
                "preprocess")
"""Every param that changes a preprocessed image's pixels; ``base.class_names`` is not one."""

PIXEL_CODE = (images, channels, transforms)
"""The modules that decode and transform pixels: an edit to one is a new cache key."""

KEEP_KEYS = 3
PACK = "pack.bin"
_CHECKSUM_BYTES = 16
_ID_BYTES = 64


def cache_root(ws: Workspace) -> Path:
    return ws.root / "data" / ".preprocess_cache"


def cache_key(config: Config) -> str:
    """The key of every entry made with ``config``: its pixel params and the pixel code."""
    digest = hashlib.sha256(digest_of(config, PIXEL_PARAMS).encode())
    for module in PIXEL_CODE:
        digest.update(Path(module.__file__ or "").read_bytes())
    return digest.hexdigest()[:16]


def _checksum(data: bytes | memoryview) -> bytes:
    """CRC-32 of a record's pixels, zero-padded: it catches a flipped bit or a torn write (what
    a cache must never trust) at a tenth of a cryptographic hash's cost."""
    return zlib.crc32(data).to_bytes(4, "little").ljust(_CHECKSUM_BYTES, b"\0")


def _record_id(image_id: str) -> bytes:
    """The id as a record holds it: a sha256 hex id as it is, any other id hashed to one."""
    if len(image_id) == _ID_BYTES and image_id.isascii() and image_id.isalnum():
        return image_id.encode("ascii")  # a content hash (any 64 letters and digits fit)
    return hashlib.sha256(image_id.encode()).hexdigest().encode("ascii")


class PreprocessCache:
    """Preprocessed uint8 ``shape`` images of one key, as records of one append-only pack."""

    def __init__(self, root: Path, key: str, shape: tuple[int, int, int]) -> None:
        self.root = root
        self.folder = root / key
        self.shape = shape
        # the checksum as raw bytes: numpy's "S" strings drop trailing zero bytes
        self.record = np.dtype([("id", f"S{_ID_BYTES}"), ("sum", np.uint8, (_CHECKSUM_BYTES,)),
                                ("px", np.uint8, shape)])
        self._rows: dict[bytes, int] | None = None

    @classmethod
    def for_config(cls, ws: Workspace, config: Config) -> PreprocessCache:
        size, count = config.base.image_size, config.base.channels
        return cls(cache_root(ws), cache_key(config), (size, size, count))

    @property
    def pack(self) -> Path:
        return self.folder / PACK

    def _count(self) -> int:
        """Whole records in the pack; a torn last record is cut off before anything appends."""
        try:
            size = self.pack.stat().st_size
        except OSError:
            return 0
        whole = size // self.record.itemsize
        if size != whole * self.record.itemsize:
            with self.pack.open("r+b") as handle:
                handle.truncate(whole * self.record.itemsize)
        return whole

    def _records(self) -> np.ndarray:
        count = self._count()
        if not count:
            return np.zeros(0, dtype=self.record)
        return np.memmap(self.pack, dtype=self.record, mode="r", shape=(count,))

    def rows(self, image_ids: list[str]) -> np.ndarray:
        """Each id's record number in the pack (its latest record), or -1 when it has none."""
        if self._rows is None:
            self._rows = self._index(self._records())
        index = self._rows
        return np.fromiter((index.get(_record_id(i), -1) for i in image_ids), dtype=np.int64,
                           count=len(image_ids))

    def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The pixels of records ``rows``, and whether each passed its checksum."""
        records = self._records()[rows].view(np.ndarray)  # a copy in memory, not a map
        pixels = np.ascontiguousarray(records["px"])
        sums = np.ascontiguousarray(records["sum"]).tobytes()
        data, length = memoryview(pixels.tobytes()), pixels[0].nbytes if len(pixels) else 0
        valid = np.fromiter(
            (_checksum(data[i * length:(i + 1) * length])
             == sums[i * _CHECKSUM_BYTES:(i + 1) * _CHECKSUM_BYTES] for i in range(len(pixels))),
            dtype=bool, count=len(pixels))
        return pixels, valid

    def get(self, image_id: str) -> np.ndarray | None:
        """The cached image, or None when it is missing or fails its checksum."""
        (row,) = self.rows([image_id])
        if row < 0:
            return None
        pixels, valid = self.read(np.array([row]))
        if not valid[0]:
            logger.warning("preprocess cache entry for %s is damaged; decoding it again",
                           image_id)
            return None
        return pixels[0]

    def put_many(self, entries: list[tuple[str, np.ndarray]]) -> None:
        """Append ``(image id, pixels)`` records, flushed to disk; a later record of an id
        replaces an earlier one."""
        if not entries:
            return
        block = np.zeros(len(entries), dtype=self.record)
        for i, (image_id, pixels) in enumerate(entries):
            if pixels.shape != self.shape or pixels.dtype != np.uint8:
                raise ValueError(f"cache entry of shape {pixels.shape} {pixels.dtype}; "
                                 f"expected {self.shape} uint8")
            block[i] = (_record_id(image_id), np.frombuffer(
                _checksum(np.ascontiguousarray(pixels).tobytes()), dtype=np.uint8), pixels)
        first = self._count()
        with self.pack.open("ab") as handle:
            handle.write(block.tobytes())
            handle.flush()
            os.fsync(handle.fileno())
        if self._rows is not None:
            self._rows.update({bytes(k): first + i for i, k in enumerate(block["id"])})

    def put(self, image_id: str, pixels: np.ndarray) -> None:
        self.put_many([(image_id, pixels)])

    def open(self) -> None:
        """Create this key's folder, mark it the most recently used, and drop the oldest keys."""
        self.folder.mkdir(parents=True, exist_ok=True)
        ignore = self.root / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# medimg's preprocess cache: rebuilt when missing\n*\n")
        os.utime(self.folder)
        keys = sorted((p for p in self.root.iterdir() if p.is_dir()),
                      key=lambda p: p.stat().st_mtime, reverse=True)
        for old in keys[KEEP_KEYS:]:
            if old != self.folder:
                shutil.rmtree(old, ignore_errors=True)

    def keep_only(self, image_ids: set[str]) -> None:
        """Rewrite the pack with the latest record of each of ``image_ids`` when dead records
        (other images, replaced entries) outnumber them; remove half-written files."""
        for path in self.folder.glob("*.tmp"):
            path.unlink(missing_ok=True)
        records = self._records()
        if len(records) <= 2 * len(image_ids):
            return  # at most twice the images kept: not worth a rewrite whatever is dead
        wanted = {_record_id(i) for i in image_ids}
        index = self._rows if self._rows is not None else self._index(records)
        rows = sorted({r for k, r in index.items() if k in wanted})
        if len(records) > 2 * len(rows):
            self._rewrite(records, rows)

    def drop(self, image_ids: set[str]) -> None:
        """Remove every record of ``image_ids``: they are decoded again when next needed."""
        records = self._records()
        gone = {_record_id(i) for i in image_ids}
        self._rewrite(records, [r for r, k in enumerate(records["id"]) if bytes(k) not in gone])

    def record_ids(self) -> list[str]:
        """The image id of each record, in the pack's order (later records replace earlier)."""
        return [bytes(k).decode("ascii") for k in self._records()["id"]]

    def _rewrite(self, records: np.ndarray, rows: list[int]) -> None:
        """Replace the pack with its records ``rows``, whole or not at all."""
        handle, temporary = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                for start in range(0, len(rows), 4096):
                    file.write(np.asarray(records[rows[start:start + 4096]]).tobytes())
            del records
            os.replace(temporary, self.pack)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self._rows = None

    @staticmethod
    def _index(records: np.ndarray) -> dict[bytes, int]:
        return {bytes(k): i for i, k in enumerate(records["id"])}
