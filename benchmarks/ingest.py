"""Ingest throughput: 10,000 PNGs of 512x512, first ingest and a re-ingest that finds nothing new.

Runs side by side, in one process, on the same files:

- baseline: one process, no stat cache (every file read, hashed and decoded in turn, as the
  first version of ingest did);
- ours: worker processes (one per core) for decoding, and the stat cache that lets a re-ingest
  skip reading files whose size and modification time have not changed.

Usage:
    python benchmarks/ingest.py [--images 10000] [--size 512] [--keep DIR]

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

# Passed to the stage as a setting; phantom file names carry no patient ids, so it is checked
# but not otherwise needed.
PSEUDONYM_KEY = "benchmark-key-0123456789"
BASES = 400  # distinct phantoms; each is written several times with its own sensor noise


def _write_variants(args: tuple[int, int, int, str, int]) -> int:
    from medimg.data.phantoms import render_phantom

    base, size, copies, out, seed = args
    rng = np.random.default_rng([seed, base])
    positive = base % 2 == 1
    image = render_phantom(rng, size, positive).astype(np.int16)
    folder = Path(out) / ("pneumonia" if positive else "normal")
    for copy in range(copies):
        noise = rng.normal(0.0, 1.5, image.shape).round().astype(np.int16)
        pixels = np.clip(image + noise, 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"b{base:04d}_c{copy:03d}.png"), pixels)
    return copies


def make_dataset(out: Path, n_images: int, size: int, seed: int = 0) -> None:
    for name in ("normal", "pneumonia"):
        (out / name).mkdir(parents=True, exist_ok=True)
    per_base = -(-n_images // BASES)
    jobs = []
    left = n_images
    for base in range(BASES):
        take = min(per_base, left)
        if take <= 0:
            break
        jobs.append((base, size, take, str(out), seed))
        left -= take
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        written = sum(pool.map(_write_variants, jobs))
    assert written == n_images, written


def run_ingest(root: Path, src: Path, workers: int, keep_cache: bool) -> tuple[float, int]:
    from medimg.config import parse_config
    from medimg.data import stage
    from medimg.data.statcache import stat_cache_path
    from medimg.settings import Settings
    from medimg.workspace import open_workspace

    ws = open_workspace(root)
    config = parse_config({"data": {"workers": workers}})
    settings = Settings(pseudonym_key=PSEUDONYM_KEY)
    if not keep_cache:
        stat_cache_path(ws).unlink(missing_ok=True)
    start = time.perf_counter()
    summary = stage.run_ingest(ws, config, settings, [src])
    seconds = time.perf_counter() - start
    assert summary.balanced
    return seconds, summary.ingested


def fresh_workspace(parent: Path, name: str) -> Path:
    from medimg.workspace import init_workspace

    return init_workspace(parent / name).root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--keep", type=Path, default=None, help="keep the files here")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="medimg-bench-ingest-"))
    try:
        src = (args.keep or scratch) / "pngs"
        if not (src / "normal").is_dir():
            start = time.perf_counter()
            make_dataset(src, args.images, args.size)
            print(f"wrote {args.images} PNGs of {args.size}x{args.size} in "
                  f"{time.perf_counter() - start:.0f}s", flush=True)
        n_files = sum(1 for _ in src.rglob("*.png"))
        cores = os.cpu_count() or 1

        base_root = fresh_workspace(scratch, "baseline")
        ours_root = fresh_workspace(scratch, "ours")
        base_first, n = run_ingest(base_root, src, workers=1, keep_cache=False)
        print(f"baseline first ingest: {n} images in {base_first:.1f}s", flush=True)
        ours_first, m = run_ingest(ours_root, src, workers=0, keep_cache=True)
        print(f"ours     first ingest: {m} images in {ours_first:.1f}s ({cores} workers)",
              flush=True)
        base_again, _ = run_ingest(base_root, src, workers=1, keep_cache=False)
        print(f"baseline re-ingest (reads and hashes every file): {base_again:.2f}s", flush=True)
        ours_again, _ = run_ingest(ours_root, src, workers=0, keep_cache=True)
        print(f"ours     re-ingest (stat cache): {ours_again:.2f}s", flush=True)

        result = {
            "images": n_files,
            "size": args.size,
            "cores": cores,
            "baseline_ips": round(n / base_first, 1),
            "ingest_ips": round(m / ours_first, 1),
            "ingest_speedup": round(base_first / ours_first, 2),
            "baseline_reingest_s": round(base_again, 2),
            "reingest_s": round(ours_again, 2),
            "reingest_speedup": round(base_again / ours_again, 1),
        }
        print(json.dumps(result))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
