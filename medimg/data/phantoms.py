"""Deterministic synthetic chest-radiograph phantoms for demos, tests and calibration.

Each pseudo-patient gets an anatomy (body outline, lung fields, heart and mediastinum, ribs,
clavicles, spine) and a label; every image of that patient is a follow-up film of the same anatomy
with a new pose, exposure and noise. The positive class adds diffuse, soft-edged opacities inside
the visible lung fields, some of them faint, so a classifier has to generalise across patients and
cannot score perfectly.

Everything is drawn from ``numpy`` generators seeded by ``(seed, patient, film)``, so the same
arguments give byte-identical PNG or DICOM files (for a given numpy, OpenCV, zlib and pydicom).
"""

from __future__ import annotations

import csv
import logging
import math
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian

logger = logging.getLogger(__name__)

ImageFormat = Literal["png", "dicom"]

PATIENTS_CSV = "patients.csv"
MIN_IMAGE_SIZE = 32
_EXTENSIONS: dict[str, str] = {"png": ".png", "dicom": ".dcm"}
# Fixed so that DICOM files are byte-identical from run to run.
_STUDY_DATE = "20240101"
_STUDY_TIME = "090000"
_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "medimg:phantoms:v1")
# Stream tags keep the allocation, patient and image generators independent of each other.
_ALLOCATION_STREAM = 0
_PATIENT_STREAM = 1
_IMAGE_STREAM = 2

# Difficulty of the positive class. Calibrated so that the seed CNN in params.yaml (CLAHE +
# median preprocessing, 128 px, ~800 images split 70/15/15 by patient) reaches test F1 in
# roughly 0.85-0.97: large or dense opacities are easy, small faint ones are often missed.
_LESION_COUNT = (6, 10)  # opacities per positive patient, inclusive
_LESION_RADIUS = (0.15, 0.3)  # in units of the half image side
_LESION_CONTRAST = (0.3, 0.45)  # added attenuation, saturating at 0.9 x lung depth (~0.3)
_SUBTLE_FRACTION = 0.08  # share of positive patients on the ramp from faint to florid
_SUBTLE_COUNT = (2, 4)  # the faint end of the ramp
_SUBTLE_RADIUS = (0.08, 0.14)
_SUBTLE_CONTRAST = (0.12, 0.2)


@dataclass(frozen=True)
class PhantomSummary:
    """What :func:`generate_phantoms` wrote.

    Attributes:
        out_dir: Root of the folder-of-classes layout.
        n_images: Images written.
        n_patients: Pseudo-patients the images belong to.
        counts: Images per class name.
        image_format: ``"png"`` or ``"dicom"``.
    """

    out_dir: Path
    n_images: int
    n_patients: int
    counts: dict[str, int]
    image_format: str


@dataclass(frozen=True)
class _Anatomy:
    """One patient's anatomy in normalised coordinates (x right, y down, image spans [-1, 1])."""

    body_centre: tuple[float, float]
    body_axes: tuple[float, float]
    body_exponent: float
    body_density: float
    lung_offset: float  # horizontal distance of each lung centre from the midline
    lung_centre_y: float
    lung_axes: tuple[tuple[float, float], tuple[float, float]]  # (a, b) for image-left, -right
    lung_depth: float  # how much darker than soft tissue an aerated lung is
    heart_centre: tuple[float, float]
    heart_axes: tuple[float, float]
    rib_start: float
    rib_spacing: float
    rib_width: float
    rib_curvature: float
    rib_density: float
    n_ribs: int
    clavicle_y: float
    rotation_deg: float
    shift: tuple[float, float]
    scale: float


@dataclass(frozen=True)
class _Lesion:
    """One opacity in anatomical coordinates."""

    centre: tuple[float, float]
    radius: float
    aspect: float
    angle: float
    harmonics: tuple[tuple[float, float], ...]  # (amplitude, phase) for k = 2, 3, ...
    contrast: float
    softness: float


@dataclass(frozen=True)
class _Acquisition:
    """Per-film pose, exposure and detector settings."""

    rotation_deg: float
    shift: tuple[float, float]
    scale: float
    gain: float
    gamma: float
    heel_amplitude: float
    heel_angle: float
    quantum_noise: float
    electronic_noise: float
    blur_px: float
    lesion_gain: float


def render_phantom(rng: np.random.Generator, image_size: int, positive: bool) -> np.ndarray:
    """Render one chest-radiograph phantom of a fresh random patient.

    The generator is consumed identically for positive and negative phantoms, so two calls with
    generators in the same state give the same patient, pose and noise, differing only by the
    opacities.

    Args:
        rng: Source of randomness; advanced by the call.
        image_size: Side of the square image in pixels (at least 32).
        positive: Whether to add lung opacities.

    Returns:
        A ``uint8`` array of shape ``(image_size, image_size)``; bright is dense.
    """
    _check_image_size(image_size)
    anatomy = _sample_anatomy(rng)
    lesions = _sample_lesions(rng, anatomy)
    acquisition = _sample_acquisition(rng)
    return _render(anatomy, lesions if positive else (), acquisition, image_size, rng)


def phantom_png(image_size: int, channels: int = 1, seed: int = 0) -> bytes:
    """One phantom (no opacities) encoded as PNG bytes that hold pixels only: no text, time,
    EXIF or colour-profile chunks. A stand-in image that carries no patient's data.

    Args:
        image_size: Side of the square image in pixels (at least 32).
        channels: 1 for greyscale, 3 for RGB (the grey repeated).
        seed: Non-negative seed; the same seed gives the same bytes.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels {channels!r} must be 1 or 3; set base.channels")
    image = render_phantom(np.random.default_rng(seed), image_size, positive=False)
    if channels == 3:
        image = np.repeat(image[:, :, None], 3, axis=2)
    from medimg.data.pixels_only import png_pixels

    return png_pixels(image)


def generate_phantoms(
    out_dir: Path,
    n_images: int = 800,
    image_size: int = 128,
    positive_fraction: float = 0.5,
    seed: int = 0,
    image_format: ImageFormat = "png",
    images_per_patient: tuple[int, int] = (2, 6),
    class_names: tuple[str, str] = ("normal", "pneumonia"),
) -> PhantomSummary:
    """Write a folder-of-classes data set of synthetic chest radiographs.

    Layout: ``out_dir/<class>/ptNNNN_imgKK.<png|dcm>`` plus ``out_dir/patients.csv`` with columns
    ``path,patient_id,label`` (``path`` relative to ``out_dir`` with ``/`` separators). All images
    of a patient share the patient's class. The same arguments give byte-identical files.

    Args:
        out_dir: Destination; must not exist or be empty.
        n_images: Total number of images written, exactly.
        image_size: Side of the square images in pixels (at least 32).
        positive_fraction: Share of images in the positive class, ``class_names[1]``.
        seed: Non-negative seed; a different seed gives different images.
        image_format: ``"png"`` (8-bit greyscale) or ``"dicom"`` (DX, MONOCHROME2, 8-bit).
        images_per_patient: Inclusive ``(min, max)`` images per pseudo-patient.
        class_names: ``(negative, positive)`` class folder names.

    Returns:
        A summary of what was written.

    Raises:
        ValueError: An argument is out of range, or ``out_dir`` already holds files.
    """
    out_dir = Path(out_dir)
    _check_image_size(image_size)
    _check_arguments(
        n_images, positive_fraction, seed, image_format, images_per_patient, class_names, out_dir
    )
    n_positive = math.floor(n_images * positive_fraction + 0.5)
    n_negative = n_images - n_positive
    lo, hi = images_per_patient
    for name, count in ((class_names[0], n_negative), (class_names[1], n_positive)):
        if not _partition_possible(count, lo, hi):
            raise ValueError(
                f"n_images={n_images} with positive_fraction={positive_fraction} gives {count} "
                f"'{name}' images, which cannot be split into patients of {lo}..{hi} images; "
                "raise n_images, move positive_fraction towards 0.5 or widen images_per_patient"
            )

    allocation_rng = np.random.default_rng([seed, _ALLOCATION_STREAM])
    sizes = [(False, s) for s in _partition(allocation_rng, n_negative, lo, hi)]
    sizes += [(True, s) for s in _partition(allocation_rng, n_positive, lo, hi)]
    order = allocation_rng.permutation(len(sizes))  # so patient ids do not give away the label
    patients = [sizes[i] for i in order]

    for name in class_names:
        (out_dir / name).mkdir(parents=True, exist_ok=True)
    extension = _EXTENSIONS[image_format]
    id_width = max(4, len(str(len(patients))))
    rows: list[tuple[str, str, str]] = []
    for p_index, (positive, n_films) in enumerate(patients, start=1):
        patient_rng = np.random.default_rng([seed, _PATIENT_STREAM, p_index])
        anatomy = _sample_anatomy(patient_rng)
        lesions = _sample_lesions(patient_rng, anatomy) if positive else ()
        patient_id = f"PT-{p_index:0{id_width}d}"
        label = class_names[int(positive)]
        for i_index in range(1, n_films + 1):
            image_rng = np.random.default_rng([seed, _IMAGE_STREAM, p_index, i_index])
            acquisition = _sample_acquisition(image_rng)
            image = _render(anatomy, lesions, acquisition, image_size, image_rng)
            relative = f"{label}/pt{p_index:0{id_width}d}_img{i_index:02d}{extension}"
            if image_format == "png":
                _write_png(out_dir / relative, image)
            else:
                _write_dicom(out_dir / relative, image, patient_id, seed, p_index, i_index)
            rows.append((relative, patient_id, label))

    with (out_dir / PATIENTS_CSV).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("path", "patient_id", "label"))
        writer.writerows(rows)

    counts = {class_names[0]: n_negative, class_names[1]: n_positive}
    logger.info(
        "wrote %d %s phantoms of %d patients to %s (%s)",
        n_images,
        image_format,
        len(patients),
        out_dir,
        counts,
    )
    return PhantomSummary(
        out_dir=out_dir,
        n_images=n_images,
        n_patients=len(patients),
        counts=counts,
        image_format=image_format,
    )


# --- argument checks -------------------------------------------------------------------------


def _check_image_size(image_size: int) -> None:
    if not _is_int(image_size) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(
            f"image_size {image_size!r} must be an integer of at least {MIN_IMAGE_SIZE}; "
            "set a larger image_size"
        )


def _check_arguments(
    n_images: int,
    positive_fraction: float,
    seed: int,
    image_format: str,
    images_per_patient: tuple[int, int],
    class_names: tuple[str, str],
    out_dir: Path,
) -> None:
    if not _is_int(n_images) or n_images < 2:
        raise ValueError(f"n_images {n_images!r} must be an integer of at least 2; raise it")
    if not 0.0 < positive_fraction < 1.0:
        raise ValueError(
            f"positive_fraction {positive_fraction!r} must lie strictly between 0 and 1; "
            "use e.g. 0.5"
        )
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed {seed!r} must be a non-negative integer; use e.g. 0")
    if image_format not in _EXTENSIONS:
        raise ValueError(
            f"image_format {image_format!r} is not one of {sorted(_EXTENSIONS)}; pick one"
        )
    if (
        len(images_per_patient) != 2
        or not all(_is_int(v) for v in images_per_patient)
        or not 1 <= images_per_patient[0] <= images_per_patient[1]
    ):
        raise ValueError(
            f"images_per_patient {images_per_patient!r} must be (min, max) integers with "
            "1 <= min <= max; use e.g. (2, 6)"
        )
    if (
        len(class_names) != 2
        or len(set(class_names)) != 2
        or not all(_is_folder_name(name) for name in class_names)
    ):
        raise ValueError(
            f"class_names {class_names!r} must be two different plain folder names; "
            "use e.g. ('normal', 'pneumonia')"
        )
    # hidden files (a marker, a .gitignore) are not data and may already be there
    visible = out_dir.is_dir() and any(not p.name.startswith(".") for p in out_dir.iterdir())
    if out_dir.exists() and (not out_dir.is_dir() or visible):
        raise ValueError(
            f"out_dir {str(out_dir)!r} already exists and is not an empty folder; "
            "delete it or choose a new folder"
        )


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_folder_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and name.strip() == name
        and name not in ("", ".", "..")
        and not any(c in name for c in '/\\:*?"<>|,')
    )


def _partition_possible(total: int, lo: int, hi: int) -> bool:
    return total >= lo and math.ceil(total / hi) <= total // lo


def _partition(rng: np.random.Generator, total: int, lo: int, hi: int) -> list[int]:
    """Split ``total`` images into patients of ``lo..hi`` images each."""
    fewest, most = math.ceil(total / hi), total // lo
    n_patients = min(max(round(2 * total / (lo + hi)), fewest), most)
    sizes = np.full(n_patients, lo, dtype=np.int64)
    extra = total - n_patients * lo
    if extra:
        slots = np.repeat(np.arange(n_patients), hi - lo)
        np.add.at(sizes, rng.choice(slots, size=extra, replace=False), 1)
    return [int(s) for s in sizes]


# --- sampling --------------------------------------------------------------------------------


def _sample_anatomy(rng: np.random.Generator) -> _Anatomy:
    lung_centre_y = rng.uniform(-0.12, -0.02)
    right_lung = (rng.uniform(0.27, 0.33), rng.uniform(0.55, 0.66))
    left_lung = (rng.uniform(0.25, 0.31), rng.uniform(0.52, 0.63))
    return _Anatomy(
        body_centre=(rng.normal(0.0, 0.02), rng.uniform(0.05, 0.15)),
        body_axes=(rng.uniform(0.78, 0.9), rng.uniform(1.05, 1.25)),
        body_exponent=rng.uniform(2.2, 3.0),
        body_density=rng.uniform(0.5, 0.6),
        lung_offset=rng.uniform(0.38, 0.44),
        lung_centre_y=lung_centre_y,
        lung_axes=(right_lung, left_lung),
        lung_depth=rng.uniform(0.27, 0.35),
        heart_centre=(rng.uniform(0.06, 0.14), lung_centre_y + rng.uniform(0.3, 0.38)),
        heart_axes=(rng.uniform(0.26, 0.33), rng.uniform(0.2, 0.26)),
        rib_start=lung_centre_y - rng.uniform(0.6, 0.7),
        rib_spacing=rng.uniform(0.12, 0.15),
        rib_width=rng.uniform(0.022, 0.03),
        rib_curvature=rng.uniform(0.7, 1.0),
        rib_density=rng.uniform(0.03, 0.06),
        n_ribs=int(rng.integers(9, 12)),
        clavicle_y=lung_centre_y - rng.uniform(0.5, 0.58),
        rotation_deg=rng.uniform(-4.0, 4.0),
        shift=(rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05)),
        scale=rng.uniform(0.92, 1.06),
    )


def _sample_lesions(rng: np.random.Generator, anatomy: _Anatomy) -> tuple[_Lesion, ...]:
    """Draw a positive patient's opacities; always consumes the same amount of randomness."""
    # Severity runs continuously from faint to florid across the first _SUBTLE_FRACTION of
    # positive patients, so the classifier meets every degree of difficulty, not two modes.
    severity = min(1.0, rng.uniform() / _SUBTLE_FRACTION)

    def between(faint: tuple[float, float], florid: tuple[float, float]) -> tuple[float, float]:
        return (faint[0] + severity * (florid[0] - faint[0]),
                faint[1] + severity * (florid[1] - faint[1]))

    count_range = between(_SUBTLE_COUNT, _LESION_COUNT)
    n_lesions = int(rng.integers(round(count_range[0]), round(count_range[1]) + 1))
    radius_range = between(_SUBTLE_RADIUS, _LESION_RADIUS)
    contrast_range = between(_SUBTLE_CONTRAST, _LESION_CONTRAST)
    lesions = []
    for k in range(max(_LESION_COUNT[1], _SUBTLE_COUNT[1])):  # fixed count keeps draws aligned
        side = -1.0 if rng.uniform() < 0.5 else 1.0
        centre = _point_in_lung(rng, anatomy, side)
        lesion = _Lesion(
            centre=centre,
            radius=rng.uniform(*radius_range),
            aspect=rng.uniform(0.6, 1.4),
            angle=rng.uniform(0.0, np.pi),
            harmonics=tuple(
                (float(rng.uniform(0.0, 0.25 / h)), float(rng.uniform(0.0, 2 * np.pi)))
                for h in range(2, 6)
            ),
            contrast=rng.uniform(*contrast_range),
            softness=rng.uniform(0.2, 0.45),
        )
        if k < n_lesions:
            lesions.append(lesion)
    return tuple(lesions)


def _point_in_lung(rng: np.random.Generator, anatomy: _Anatomy, side: float) -> tuple[float, float]:
    a, b = anatomy.lung_axes[int(side > 0)]
    cx, cy = side * anatomy.lung_offset, anatomy.lung_centre_y
    hx, hy = anatomy.heart_centre
    ha, hb = anatomy.heart_axes
    # A fixed number of candidates keeps the stream independent of which one is accepted.
    rho = 0.75 * np.sqrt(rng.uniform(size=16))
    phi = rng.uniform(0.0, 2 * np.pi, size=16)
    px, py = cx + rho * a * np.cos(phi), cy + rho * b * np.sin(phi)
    outside_heart = ((px - hx) / ha) ** 2 + ((py - hy) / hb) ** 2 > 1.2
    k = int(np.argmax(outside_heart)) if outside_heart.any() else 0
    return (float(px[k]), float(py[k]))


def _sample_acquisition(rng: np.random.Generator) -> _Acquisition:
    return _Acquisition(
        rotation_deg=rng.normal(0.0, 1.5),
        shift=(rng.normal(0.0, 0.02), rng.normal(0.0, 0.02)),
        scale=1.0 + rng.normal(0.0, 0.02),
        gain=rng.uniform(0.88, 1.12),
        gamma=rng.uniform(0.85, 1.15),
        heel_amplitude=rng.uniform(0.03, 0.1),
        heel_angle=rng.uniform(0.0, 2 * np.pi),
        quantum_noise=rng.uniform(0.02, 0.04),
        electronic_noise=rng.uniform(0.004, 0.012),
        blur_px=rng.uniform(0.4, 0.8),
        lesion_gain=rng.uniform(0.85, 1.15),
    )


# --- rendering -------------------------------------------------------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _smooth_field(rng: np.random.Generator, cells: int, size: int) -> np.ndarray:
    """Zero-mean, unit-ish smooth random field sampled on a coarse grid and upsampled."""
    coarse = rng.standard_normal((cells, cells), dtype=np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def _lesion_map(
    u: np.ndarray, v: np.ndarray, lesions: tuple[_Lesion, ...], gain: float
) -> np.ndarray:
    """Summed opacity of irregular soft ellipses, evaluated only near each lesion."""
    opacity = np.zeros_like(u)
    for lesion in lesions:
        du, dv = u - lesion.centre[0], v - lesion.centre[1]
        reach = lesion.radius * (
            max(1.0, lesion.aspect) * (1.0 + sum(a for a, _ in lesion.harmonics))
            + 7.0 * lesion.softness
        )
        near = du * du + dv * dv < reach * reach
        du, dv = du[near], dv[near]
        ca, sa = math.cos(lesion.angle), math.sin(lesion.angle)
        ru, rv = ca * du + sa * dv, (-sa * du + ca * dv) / lesion.aspect
        q = np.sqrt(ru * ru + rv * rv)
        # cos(k*phi + phase) from powers of the unit direction, cheaper than arctan2 and cos.
        z = (ru + 1j * rv) / np.maximum(q, 1e-6)
        wobble = np.ones_like(q)
        zk = z
        for a, phase in lesion.harmonics:
            zk = zk * z
            wobble += a * (zk.real * math.cos(phase) - zk.imag * math.sin(phase))
        radius = lesion.radius * wobble
        blob = _sigmoid((radius - q) / (lesion.softness * lesion.radius))
        opacity[near] += lesion.contrast * gain * blob
    return opacity


def _render(
    anatomy: _Anatomy,
    lesions: tuple[_Lesion, ...],
    acq: _Acquisition,
    size: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Render one film; consumes ``rng`` the same way whatever ``lesions`` holds."""
    f32 = np.float32
    coords = (np.arange(size, dtype=f32) + f32(0.5)) * f32(2.0 / size) - f32(1.0)
    x, y = np.meshgrid(coords, coords)
    pixel = 2.0 / size  # width of one pixel in normalised units, for anti-aliased edges

    # Anatomical coordinates: undo the patient's and this film's shift, scale and rotation.
    theta = math.radians(anatomy.rotation_deg + acq.rotation_deg)
    scale = anatomy.scale * acq.scale
    xs = (x - f32(anatomy.shift[0] + acq.shift[0])) * f32(1.0 / scale)
    ys = (y - f32(anatomy.shift[1] + acq.shift[1])) * f32(1.0 / scale)
    cos_t, sin_t = f32(math.cos(theta)), f32(math.sin(theta))
    u = cos_t * xs + sin_t * ys
    v = cos_t * ys - sin_t * xs
    edge = 1.5 * pixel / scale

    # Trunk: a soft superellipse, thicker (brighter) towards the middle.
    bx, by = anatomy.body_centre
    ba, bb = anatomy.body_axes
    p = anatomy.body_exponent
    body_r = (np.abs((u - bx) / ba) ** p + np.abs((v - by) / bb) ** p) ** (1.0 / p)
    body = _sigmoid((1.0 - body_r) * (ba / edge))
    density = anatomy.body_density * body * (0.8 + 0.2 * np.clip(1.0 - body_r**2, 0.0, 1.0))

    # Spine and mediastinum: a bright vertical band.
    t = np.abs(u - bx)
    spine = _sigmoid((0.075 - t) * (1.0 / (2 * edge))) * body
    density += 0.06 * spine * (1.0 + 0.15 * np.cos(v * (2 * math.pi / anatomy.rib_spacing)))

    # Lungs: tapered ellipses, apex narrower than base; the heart hides part of the left lung.
    lungs = np.zeros_like(u)
    for side, (la, lb) in zip((-1.0, 1.0), anatomy.lung_axes, strict=True):
        du = (u - side * anatomy.lung_offset) * (1.0 / la)
        dv = (v - anatomy.lung_centre_y) * (1.0 / lb)
        taper = np.clip(0.78 + 0.22 * dv, 0.55, 1.0)
        r = np.sqrt((du / taper) ** 2 + dv**2)
        lungs = np.maximum(lungs, _sigmoid((1.0 - r) * (la / edge)))
    hx, hy = anatomy.heart_centre
    ha, hb = anatomy.heart_axes
    heart_r = np.sqrt(((u - hx) * (1.0 / ha)) ** 2 + ((v - hy) * (1.0 / hb)) ** 2)
    heart = _sigmoid((1.0 - heart_r) * (hb / (2 * edge)))
    lung_field = lungs * (1.0 - heart) * body
    density -= anatomy.lung_depth * lung_field
    density += 0.03 * heart * body

    # Posterior ribs (bright curved bands) and fainter anterior ribs, across each hemithorax.
    outer = anatomy.lung_offset + max(a for a, _ in anatomy.lung_axes) + 0.08
    thorax = _sigmoid((outer - t) * (1.0 / (3 * edge))) * _sigmoid((t - 0.07) * (1.0 / (2 * edge)))
    thorax *= body
    spacing, width = anatomy.rib_spacing, anatomy.rib_width
    rib_phase = (v - anatomy.rib_start + 0.12 * t - anatomy.rib_curvature * t**2) * (1.0 / spacing)
    in_cage = (rib_phase > -0.5) & (rib_phase < anatomy.n_ribs - 0.5)
    rib_offset = (rib_phase - np.round(rib_phase)) * (spacing / width)
    ribs = np.exp(-(rib_offset**2)) * in_cage
    ant_phase = (v - anatomy.rib_start - 0.1 - 0.25 * t + 0.25 * t**2) * (1.0 / (1.1 * spacing))
    ant_offset = (ant_phase - np.round(ant_phase)) * (spacing / (1.3 * width))
    ant_in = (ant_phase > -0.5) & (ant_phase < anatomy.n_ribs - 3.5)
    ribs += 0.4 * np.exp(-(ant_offset**2)) * ant_in
    density += anatomy.rib_density * ribs * thorax

    # Clavicles.
    clav_offset = (v - (anatomy.clavicle_y - 0.15 * t + 0.12 * t**2)) * (1.0 / 0.03)
    clavicles = np.exp(-(clav_offset**2)) * _sigmoid((0.62 - t) * (1.0 / (3 * edge)))
    density += 0.08 * clavicles * _sigmoid((t - 0.06) * (1.0 / (2 * edge))) * body

    # Lung markings; drawn for every film so the stream does not depend on the label.
    markings = _smooth_field(rng, max(8, size // 8), size)
    density += 0.015 * markings * lung_field

    # Opacities: irregular soft ellipses, patchy inside, confined to the visible lung fields.
    texture = 0.6 + 0.4 * np.clip(_smooth_field(rng, max(8, size // 5), size), -1.0, 1.0)
    if lesions:
        opacity = _lesion_map(u, v, lesions, acq.lesion_gain)
        cap = 0.9 * anatomy.lung_depth
        opacity = cap * (1.0 - np.exp(opacity * (-1.0 / cap))) * texture * lung_field
        # Cut the soft tails so that pixels away from an opacity stay bit-identical to the
        # negative film (otherwise tiny changes flip roundings all over the image).
        opacity[opacity < 1e-3] = 0.0
        density += opacity

    # Exposure: heel effect, smooth non-uniformity, gain and gamma.
    heel = acq.heel_amplitude * (math.cos(acq.heel_angle) * x + math.sin(acq.heel_angle) * y)
    field = 0.025 * _smooth_field(rng, 4, size)
    signal = np.clip(0.05 + density, 0.0, None) * (1.0 + heel + field)
    signal = acq.gain * np.clip(signal, 0.0, None) ** acq.gamma

    # Detector: signal-dependent (quantum) plus electronic noise, then a slight blur.
    noise_sd = np.sqrt(acq.quantum_noise**2 * signal + acq.electronic_noise**2)
    signal += noise_sd * rng.standard_normal(signal.shape, dtype=f32)
    sigma = acq.blur_px * size / 128.0
    signal = cv2.GaussianBlur(signal, (0, 0), sigmaX=sigma, sigmaY=sigma)
    return np.clip(np.rint(signal * 255.0), 0, 255).astype(np.uint8)


# --- writers ---------------------------------------------------------------------------------


def _write_png(path: Path, image: np.ndarray) -> None:
    # Pillow writes no timestamp or text chunks unless asked, so the bytes depend on pixels only.
    Image.fromarray(image, mode="L").save(path, format="PNG", compress_level=6)


def _uid(seed: int, *parts: object) -> str:
    # A name-based (version 5) UUID under the 2.25 root: deterministic, unique per name, and a
    # valid UID of at most 44 characters. (pydicom's generate_uid ignores entropy when prefix=None.)
    name = "/".join([str(seed), *map(str, parts)])
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, name).int}"


def _write_dicom(
    path: Path, image: np.ndarray, patient_id: str, seed: int, p_index: int, i_index: int
) -> None:
    sop_instance_uid = _uid(seed, "instance", p_index, i_index)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyInstanceUID = _uid(seed, "study", p_index, i_index)
    ds.SeriesInstanceUID = _uid(seed, "series", p_index, i_index)
    ds.FrameOfReferenceUID = _uid(seed, "frame", p_index)
    ds.PatientName = f"PHANTOM^{patient_id}"
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = _STUDY_DATE
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = _STUDY_TIME
    ds.StudyID = f"{i_index}"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.Modality = "DX"
    ds.Manufacturer = "medimg synthetic phantom"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.SeriesNumber = 1
    ds.InstanceNumber = i_index
    ds.PatientOrientation = ["L", "F"]
    ds.BurnedInAnnotation = "NO"
    ds.set_pixel_data(image, "MONOCHROME2", 8, generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)
