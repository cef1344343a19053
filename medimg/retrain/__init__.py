"""The feedback loop's retraining: what changed, whether to retrain, and the summary."""
