"""What ``medimg demo`` prepares before the pipeline runs: phantoms in ``data/raw``."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from medimg.config import Config
from medimg.data.phantoms import generate_phantoms
from medimg.errors import MedimgError
from medimg.workspace import Workspace

# Phantom patient ids identify nobody: the demo pseudonymises them with this fixed key when
# MEDIMG_PSEUDONYM_KEY is unset. Real data needs a key of its own.
DEMO_PSEUDONYM_KEY = "medimg-demo-key-for-phantoms-only"
MARKER = ".phantoms"


@dataclass(frozen=True)
class DemoData:
    """The phantoms in ``data/raw``: how many, at what size, and whether they were made now."""

    n_images: int
    image_size: int
    made_now: bool


def prepare_phantoms(ws: Workspace, config: Config, n_images: int,
                     announce=lambda text: None) -> DemoData:
    """Make ``n_images`` phantoms in ``data/raw`` unless the same ones are there already.

    Phantoms of an earlier demo with other settings are replaced; ``data/raw`` holding anything
    the demo did not make is refused, never touched.

    Raises:
        MedimgError: ``data/raw`` holds the user's own data, or the settings cannot be drawn.
    """
    marker = ws.raw_dir / MARKER
    if ws.raw_dir.exists() and any(ws.raw_dir.iterdir()) and not marker.exists():
        raise MedimgError(f"{ws.relative(ws.raw_dir)} holds data that the demo did not make; "
                          "run the demo in another workspace (`medimg init DIR`, then "
                          "`medimg demo --workspace DIR`)")
    size, seed = config.base.image_size, config.base.seed
    stamp = f"n={n_images} size={size} seed={seed}\n"
    if marker.exists() and marker.read_text() == stamp:
        return DemoData(n_images, size, made_now=False)
    if marker.exists():  # phantoms of an earlier demo with other settings: ours to replace
        shutil.rmtree(ws.raw_dir)
        ws.manifest_path.unlink(missing_ok=True)
    announce(f"synthesising {n_images} phantoms at {size}x{size} in {ws.relative(ws.raw_dir)} ...")
    # marked as the demo's own before writing, so an interrupted demo can be replaced
    ws.raw_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text("incomplete\n")
    try:
        generate_phantoms(ws.raw_dir, n_images=n_images, image_size=size, seed=seed,
                          class_names=tuple(config.base.class_names[:2]))
    except ValueError as exc:
        raise MedimgError(str(exc)) from None
    marker.write_text(stamp)
    return DemoData(n_images, size, made_now=True)
