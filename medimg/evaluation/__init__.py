"""Metrics, plots and the evaluate stage."""
