"""The worker side of ingest: one item decoded, checked, measured, hashed and de-identified.

:func:`run_analyses` sends the items ingest has not seen before to a pool of worker processes
(spawned, each given the :class:`AnalysisOptions` once) or, for a few items, analyses them in
this process. A worker writes nothing: its :class:`Analysis` carries the verdict, the values for
the manifest, the de-identified DICOM bytes and, in memory only, the identifiers the file's
header held, so the parent can scrub them from every reference before anything is logged.
"""

from __future__ import annotations

import io
import logging
import math
import multiprocessing
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medimg.data import deid
from medimg.data.hashing import phash, phash_hex, thumbnail_code
from medimg.data.images import (
    DICOM_SNIFF_BYTES,
    DecodedImage,
    UndecodableImage,
    decode,
    decode_array,
    decode_deidentified,
    image_stats,
    is_dicom,
    read_dicom,
)
from medimg.data.pixels_only import pixels_only_copy
from medimg.data.pseudonyms import PseudonymKeyMissing
from medimg.data.quarantine import Reject
from medimg.data.sources import SourceItem

_POOL_MIN_ITEMS = 64
# Real colour: channels more than _COLOUR_SPREAD levels (of 255) apart in at least _COLOUR_SHARE
# of the pixels. JPEG keeps grey stored as RGB within a few levels; a red marker on a radiograph
# covers well under 1% of it.
_COLOUR_SPREAD = 16
_COLOUR_SHARE = 0.01
_COLOUR_SAMPLE = 1 << 20  # pixels looked at, at most (about)
VALUE_COLUMNS = (
    "width",
    "height",
    "channels",
    "bit_depth",
    "colour",
    "intensity_min",
    "intensity_max",
    "intensity_mean",
    "intensity_std",
    "saturated_fraction",
    "blank_fraction",
    "phash",
    "thumbnail",
)
"""The manifest columns an analysis measures (:attr:`Analysis.values`), in this order."""


@dataclass(frozen=True)
class AnalysisOptions:
    """What a worker needs; picklable, sent once per worker process."""

    dicom_frame: str
    max_pixels: int
    min_side: int
    min_std: float
    key: bytes | None
    allow_burned_in: bool


@dataclass
class Analysis:
    """A worker's verdict on one item. Original identifiers stay in memory, never written."""

    reject: Reject | None = None
    fmt: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    store_bytes: bytes | None = None  # the de-identified DICOM; other copies are made on write
    store_suffix: str = ""
    patient: str | None = None
    identifiers: frozenset[str] = frozenset()
    metadata: dict[str, str] = field(default_factory=dict)
    sop_uid: str | None = None


def run_analyses(
    items: Sequence[SourceItem],
    options: AnalysisOptions,
    workers: int,
    progress: Callable[[int, int], None] | None,
) -> list[Analysis]:
    """Analyse each item (a file or an array), in worker processes when there are many.

    Args:
        items: What to analyse; the results come back in the same order.
        options: What every worker needs, from the config and the pseudonym key.
        workers: Processes to use; 0 means one per core, 1 none (this process).
        progress: Called with (done, total) after each item.
    """
    tasks = [(item.path, item.array) for item in items]  # in the order of ``items``
    workers = workers or (os.cpu_count() or 1)
    total = len(tasks)
    results: list[Analysis] = []
    if workers <= 1 or total < _POOL_MIN_ITEMS:
        for task in tasks:
            results.append(analyse(task[0], task[1], options))
            if progress:
                progress(len(results), total)
        return results
    # Spawned, not forked: the parent may hold threads (Prefect, TensorFlow) a fork would copy.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=min(workers, total),
        mp_context=context,
        initializer=_init_worker,
        initargs=(options,),
    ) as pool:
        chunk = max(1, min(32, total // (workers * 8)))
        for analysis in pool.map(_analyse_task, tasks, chunksize=chunk):
            results.append(analysis)
            if progress:
                progress(len(results), total)
    return results


_WORKER_OPTIONS: AnalysisOptions | None = None


def _init_worker(options: AnalysisOptions) -> None:
    global _WORKER_OPTIONS
    _WORKER_OPTIONS = options
    logging.getLogger("pydicom").setLevel(logging.ERROR)


def _analyse_task(task: tuple[Path | None, np.ndarray | None]) -> Analysis:
    assert _WORKER_OPTIONS is not None
    return analyse(task[0], task[1], _WORKER_OPTIONS)


def analyse(path: Path | None, array: np.ndarray | None, options: AnalysisOptions) -> Analysis:
    """Decode, check, measure and (for DICOM) de-identify one item, writing nothing."""
    try:
        if array is not None:
            decoded = decode_array(array)
            result = Analysis(fmt="npz", store_suffix=".png")
        else:
            assert path is not None
            return analyse_bytes(path.read_bytes(), options)[0]
    except UndecodableImage as exc:
        return Analysis(reject=Reject(exc.code, str(exc)))
    except OSError as exc:
        reason = f"cannot read the file: {exc.strerror or exc}"
        return Analysis(reject=Reject("unreadable", reason))
    return _measure(result, decoded, options)


def analyse_bytes(data: bytes, options: AnalysisOptions, measure: bool = True
                  ) -> tuple[Analysis, DecodedImage | None]:
    """:func:`analyse` for a file's bytes: the format is sniffed from the content, never taken
    from a name. Also returns the decoded image, None when the file is refused. With
    ``measure=False`` the file is checked but not measured (no manifest values): what a
    prediction needs."""
    try:
        if is_dicom(data[:DICOM_SNIFF_BYTES]):
            # pydicom warns about invalid values by quoting them: they may be identifiers
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result, decoded = _analyse_dicom(data, options)
            if result.reject:
                return result, None
        else:
            decoded = decode(data, max_pixels=options.max_pixels)
            # the copy itself is made on write; here only its suffix is needed (a JPEG that
            # cannot be stripped exactly becomes a PNG, as every other format does)
            pixels = decoded.pixels
            suffix = ".png"
            if decoded.format == "jpeg":
                _, suffix = pixels_only_copy(data, decoded.format, lambda: pixels)
            result = Analysis(fmt=decoded.format, store_suffix=suffix)
    except UndecodableImage as exc:
        return Analysis(reject=Reject(exc.code, str(exc))), None
    except PseudonymKeyMissing:
        raise
    except Exception as exc:  # a malformed file is refused, never a crash; its text may quote
        # a header value, so only the error's type is kept
        return Analysis(reject=Reject("undecodable", "the file cannot be decoded "
                                                     f"({type(exc).__name__})")), None
    assert decoded is not None
    if not measure:
        result.reject = _unusable(decoded, options)
        return result, None if result.reject else decoded
    measured = _measure(result, decoded, options)
    return measured, None if measured.reject else decoded


def _measure(result: Analysis, decoded: DecodedImage, options: AnalysisOptions) -> Analysis:
    """The manifest's values for a decoded image, or the reason it cannot be used."""
    reject = _unusable(decoded, options)
    if reject:
        result.reject = reject
        result.store_bytes = None
        return result
    result.values = {
        "width": decoded.width,
        "height": decoded.height,
        "channels": decoded.channels,
        "bit_depth": decoded.bit_depth,
        "colour": has_colour(decoded.pixels),
        **image_stats(decoded.pixels),
        "phash": phash_hex(phash(decoded.pixels)),
        "thumbnail": thumbnail_code(decoded.pixels),
    }
    return result


def has_colour(pixels: np.ndarray) -> bool:
    """Whether decoded pixels have real colour: RGB whose channels differ, in more than a few
    pixels and by more than compression noise. Grey stored as RGB is not colour.
    """
    if pixels.ndim != 3 or pixels.shape[2] < 3:
        return False
    # A strided sample bounds the work on large images; colour images are colour throughout.
    step = max(1, math.isqrt(pixels.shape[0] * pixels.shape[1] // _COLOUR_SAMPLE))
    sample = pixels[::step, ::step, :3]
    spread = sample.max(axis=2).astype(np.int16) - sample.min(axis=2)
    return bool(np.count_nonzero(spread > _COLOUR_SPREAD) >= _COLOUR_SHARE * spread.size)


def _analyse_dicom(data: bytes, options: AnalysisOptions) -> tuple[Analysis, DecodedImage | None]:
    if options.key is None:  # the parent checks first; this guards the worker on its own
        raise PseudonymKeyMissing("a DICOM file reached a worker without a pseudonym key")
    try:
        ds = read_dicom(data)
    except UndecodableImage:
        return Analysis(reject=Reject("dicom_unreadable", "DICOM header cannot be read")), None
    sop_uid = str(ds.get("SOPInstanceUID", "") or "") or None
    try:
        result = deid.deidentify(ds, options.key)
    except Exception:  # any failure here must quarantine, never leak
        # what the header names is still scrubbed from the file's path
        return Analysis(reject=Reject("deid_failed", "DICOM could not be de-identified"),
                        identifiers=deid.collect_identifiers(ds)), None
    analysis = Analysis(
        fmt="dicom",
        patient=result.patient_pseudonym,
        identifiers=result.identifiers,
        metadata=result.metadata,
        sop_uid=sop_uid,
    )
    if result.burned_in_annotation and not options.allow_burned_in:
        analysis.reject = Reject(
            "burned_in",
            "DICOM BurnedInAnnotation is YES (identifiers may be in the pixels); set "
            "data.allow_burned_in_annotation to accept such files",
        )
        return analysis, None
    try:
        decoded = decode_deidentified(
            result, dicom_frame=options.dicom_frame, max_pixels=options.max_pixels
        )
    except UndecodableImage as exc:
        analysis.reject = Reject(exc.code, str(exc))
        return analysis, None
    buffer = io.BytesIO()
    try:
        ds.save_as(buffer, enforce_file_format=True)
    except Exception:  # the message may quote a value
        analysis.reject = Reject("deid_failed", "the de-identified DICOM could not be written")
        return analysis, None
    analysis.store_bytes = buffer.getvalue()
    analysis.store_suffix = ".dcm"
    return analysis, decoded


def _unusable(decoded: DecodedImage, options: AnalysisOptions) -> Reject | None:
    if min(decoded.width, decoded.height) < options.min_side:
        return Reject(
            "too_small",
            f"too small: {decoded.width}x{decoded.height}, data.min_side is {options.min_side}",
        )
    if decoded.width * decoded.height > options.max_pixels:
        return Reject("too_many_pixels", f"too many pixels: {decoded.width}x{decoded.height}")
    if decoded.source_std8 < options.min_std:
        return Reject(
            "blank",
            f"blank: near-constant image (std {decoded.source_std8:.2f} on a 0-255 scale, "
            f"data.min_std is {options.min_std})",
        )
    return None

