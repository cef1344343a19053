"""What a logged model needs installed to load and predict, pinned to the versions that built it.

The model carries the ``medimg`` package as code, so the list is what that code imports on the
way to a prediction (``medimg.serving.mlflow_model`` and the modules it pulls in) and no more.
TensorFlow comes as ``tensorflow-cpu`` where that wheel exists and as ``tensorflow`` elsewhere,
with environment markers, so one list installs on every platform TensorFlow ships wheels for,
whichever of the two this process has.
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version

logger = logging.getLogger(__name__)

# tensorflow-cpu has no wheels for Linux aarch64 or macOS; there the tensorflow wheel is CPU-only.
TENSORFLOW_CPU_MARKER = "sys_platform == 'linux' and platform_machine == 'x86_64'"
TENSORFLOW_MARKER = "sys_platform != 'linux' or platform_machine != 'x86_64'"

# The distributions behind the imports of the model's code at load and predict time.
LOADED_PACKAGES = (
    "keras",  # medimg.bundle, medimg.training.models
    "mlflow",  # medimg.serving.pyfunc, mlflow_model
    "numpy",
    "pandas",  # medimg.serving.pyfunc
    "pillow",  # medimg.data.images
    "opencv-python-headless",  # medimg.preprocessing.transforms
    "pydicom",  # medimg.data.images: DICOM uploads
    "python-gdcm",  # pydicom's decoder for compressed DICOM pixel data
    "pydantic",  # medimg.config
    "pyyaml",  # medimg.config
)


def _installed(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _pin(package: str) -> str:
    installed = _installed(package)
    if installed is None:
        logger.warning("%s is not installed here; the model requires it unpinned", package)
        return package
    return f"{package}=={installed}"


def pip_requirements() -> list[str]:
    """The logged model's pip requirements: exact pins, TensorFlow by platform markers."""
    tensorflow = _installed("tensorflow-cpu") or _installed("tensorflow")
    if tensorflow is None:
        logger.warning("neither tensorflow-cpu nor tensorflow is installed here; the model "
                       "requires TensorFlow unpinned")
    pin = f"=={tensorflow}" if tensorflow else ""
    return [f"tensorflow-cpu{pin}; {TENSORFLOW_CPU_MARKER}",
            f"tensorflow{pin}; {TENSORFLOW_MARKER}",
            *(_pin(package) for package in LOADED_PACKAGES)]
