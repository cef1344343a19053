"""Prediction paths: the MLflow pyfunc model and ``medimg predict``."""
