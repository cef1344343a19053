"""Prefect flows: orchestration only. Every stage's logic lives in ``medimg``."""
