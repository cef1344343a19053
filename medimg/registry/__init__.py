"""Quality gates and the MLflow model registry (aliases, never stages)."""
