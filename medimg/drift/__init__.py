"""Drift: incoming images compared with the training reference, feature by feature."""
