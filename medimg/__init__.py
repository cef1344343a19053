"""medimg: an MLOps pipeline for medical image classification."""

__version__ = "0.1.0"
