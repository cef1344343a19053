"""The preprocess cache: one preprocessed image per (image id, pixel params).

An image id is ingest's content hash of the image, so an entry stays valid for as long as the
image's bytes, the params that change pixels (:data:`PIXEL_PARAMS`) and the code that makes
pixels (:data:`PIXEL_CODE`) stay the same; a change to any of them is a new key, and a new
folder. The cache lives in ``data/.preprocess_cache/<key>/``, outside DVC's outs (DVC deletes a
stage's outs before it runs it) and ignored by git through its own ``.gitignore``. It is only
ever a shortcut: every entry carries a checksum, and one that is missing, truncated or altered
is decoded again, never trusted.

Bounds: the folders of the :data:`KEEP_KEYS` most recently used keys are kept, so switching
params back is free, and older ones are deleted; within the key in use, entries for images no
longer in the manifest are deleted after a run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
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
_CHECKSUM_BYTES = 16
_SAFE_NAME = re.compile(r"[0-9A-Za-z_-]{1,128}")


def cache_root(ws: Workspace) -> Path:
    return ws.root / "data" / ".preprocess_cache"


def cache_key(config: Config) -> str:
    """The key of every entry made with ``config``: its pixel params and the pixel code."""
    digest = hashlib.sha256(digest_of(config, PIXEL_PARAMS).encode())
    for module in PIXEL_CODE:
        digest.update(Path(module.__file__ or "").read_bytes())
    return digest.hexdigest()[:16]


def _checksum(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=_CHECKSUM_BYTES).digest()


class PreprocessCache:
    """Preprocessed uint8 ``shape`` images of one key, one checksummed file per image id."""

    def __init__(self, root: Path, key: str, shape: tuple[int, int, int]) -> None:
        self.root = root
        self.folder = root / key
        self.shape = shape
        self._size = int(np.prod(shape))

    @classmethod
    def for_config(cls, ws: Workspace, config: Config) -> PreprocessCache:
        size, count = config.base.image_size, config.base.channels
        return cls(cache_root(ws), cache_key(config), (size, size, count))

    def _path(self, image_id: str) -> Path:
        name = image_id if _SAFE_NAME.fullmatch(image_id) else hashlib.sha256(
            image_id.encode()).hexdigest()
        return self.folder / f"{name}.bin"

    def get(self, image_id: str) -> np.ndarray | None:
        """The cached image, or None when it is missing or fails its checksum."""
        try:
            data = self._path(image_id).read_bytes()
        except OSError:
            return None
        pixels, checksum = data[:-_CHECKSUM_BYTES], data[-_CHECKSUM_BYTES:]
        if len(pixels) != self._size or _checksum(pixels) != checksum:
            logger.warning("preprocess cache entry for %s is damaged; decoding it again",
                           image_id)
            return None
        return np.frombuffer(pixels, dtype=np.uint8).reshape(self.shape)

    def put(self, image_id: str, pixels: np.ndarray) -> None:
        """Store ``pixels`` for ``image_id``, whole or not at all (written aside, then renamed)."""
        if pixels.shape != self.shape or pixels.dtype != np.uint8:
            raise ValueError(f"cache entry of shape {pixels.shape} {pixels.dtype}; "
                             f"expected {self.shape} uint8")
        data = np.ascontiguousarray(pixels).tobytes()
        path = self._path(image_id)
        handle, temporary = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data + _checksum(data))
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

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
        """Delete this key's entries for other images, and any half-written files."""
        wanted = {self._path(i).name for i in image_ids}
        for path in self.folder.iterdir():
            if path.name not in wanted:
                path.unlink(missing_ok=True)
