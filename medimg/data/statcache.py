"""``data/.ingest_cache.json``: each file's content hash and kind, by its size and mtime.

Hashing reads every byte of a file; a re-ingest that finds the same size and modification time
as last time takes the hash and the kind (DICOM, image, other) from here instead, so a re-ingest
that finds nothing new reads nothing. Entries are keyed by a hash of the file's path, as paths
may name patients and this file stays on disk. A missing or unreadable cache is an empty one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from medimg.data.images import DICOM_SNIFF_BYTES, is_dicom
from medimg.data.sources import looks_like_image
from medimg.workspace import Workspace

STAT_CACHE_FILE = ".ingest_cache.json"

StatCache = dict[str, list[Any]]
"""Path hash -> ``[size, mtime_ns, sha256, kind]``."""


def stat_cache_path(ws: Workspace) -> Path:
    """Where the workspace's stat cache lives (git-ignored: it is local to this machine)."""
    return ws.root / "data" / STAT_CACHE_FILE


def load_stat_cache(ws: Workspace) -> StatCache:
    """The cache as the last ingest left it; empty when there is none or it cannot be read."""
    path = stat_cache_path(ws)
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (json.JSONDecodeError, OSError):
        return {}


def save_stat_cache(ws: Workspace, cache: StatCache) -> None:
    """Replace the cache atomically, so a crash leaves the previous one."""
    target = stat_cache_path(ws)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(cache))
    os.replace(tmp, target)


def cache_key(path: Path) -> str:
    """A file's key: a hash of its path, as paths may name patients and this file stays on disk."""
    return hashlib.sha256(str(path).encode()).hexdigest()[:32]


def is_cached(path: Path, cache: StatCache) -> bool:
    """Whether the last ingest read ``path`` (resolved, as ingest reads it) as it is now."""
    hit = cache.get(cache_key(path))
    if not hit:
        return False
    stat = path.stat()
    return hit[0] == stat.st_size and hit[1] == stat.st_mtime_ns


def hash_file(path: Path, cache: StatCache) -> tuple[str, str, int]:
    """The file's sha256, its kind (dicom, image, other) and its size, from one stat."""
    stat = path.stat()
    key = cache_key(path)
    hit = cache.get(key)
    if hit and hit[0] == stat.st_size and hit[1] == stat.st_mtime_ns:
        return hit[2], hit[3], stat.st_size
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        head = handle.read(DICOM_SNIFF_BYTES)
        digest.update(head)
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    kind = "dicom" if is_dicom(head) else ("image" if looks_like_image(path, head) else "other")
    cache[key] = [stat.st_size, stat.st_mtime_ns, digest.hexdigest(), kind]
    return digest.hexdigest(), kind, stat.st_size
