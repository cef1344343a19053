"""Input pipeline, augmentation, models and the training loop."""
