"""Data sources, manifest, splits, synthetic phantoms and DICOM handling."""
