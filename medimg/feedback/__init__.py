"""Feedback: reviewers confirm or correct labels, with provenance, in an append-only log."""
